package io.vmpage.bench.cli;

import io.vmpage.bench.overcommit.OvercommitResult;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import org.knowm.xchart.BitmapEncoder;
import org.knowm.xchart.XYChart;
import org.knowm.xchart.XYChartBuilder;
import org.knowm.xchart.XYSeries;
import org.knowm.xchart.style.Styler;
import org.knowm.xchart.style.markers.SeriesMarkers;

/**
 * The {@code overcommit --plot} figure, after Figure 7 of Waldspurger (OSDI 2002): each VM's allocated
 * memory (the machine memory backing it privately) over time, one line per VM, and the host's free
 * memory; the scenario and tax rate in the title. Drawn by XChart, headless.
 */
final class OvercommitPlot {
    static {
        if (System.getProperty("java.awt.headless") == null) {
            System.setProperty("java.awt.headless", "true");
        }
    }

    private static final double MIB = 1 << 20;

    private OvercommitPlot() {
    }

    static XYChart chart(OvercommitResult result) {
        XYChart chart = new XYChartBuilder().width(MigrationPlot.WIDTH).height(MigrationPlot.HEIGHT)
            .title(String.format(Locale.ROOT, "Overcommit scenario %s: %d VMs on a %.0f MiB host%s", result.scenario().cliName,
                result.vms().size(), result.hostBytes() / MIB,
                result.reclaimer() == null ? ", page sharing" : String.format(Locale.ROOT, ", idle memory tax %.2f", result.tau())))
            .xAxisTitle("time (s)").yAxisTitle("MiB").build();
        var style = chart.getStyler();
        style.setLegendPosition(Styler.LegendPosition.OutsideS);
        style.setLegendLayout(Styler.LegendLayout.Horizontal);
        style.setChartBackgroundColor(java.awt.Color.WHITE);
        style.setYAxisMin(0.0);
        style.setDefaultSeriesRenderStyle(XYSeries.XYSeriesRenderStyle.Line);
        for (OvercommitResult.VmResult vm : result.vms()) {
            List<OvercommitResult.Point> t = vm.timeline();
            double[] x = t.stream().mapToDouble(p -> p.tMs() / 1000.0).toArray();
            double[] y = t.stream().mapToDouble(p -> p.allocatedBytes() / MIB).toArray();
            String kind = vm.active() ? "active" : "idle";
            chart.addSeries((vm.name().startsWith(kind) ? vm.name() : vm.name() + " (" + kind + ")") + ", allocated", x, y).setMarker(SeriesMarkers.NONE);
        }
        double[] x = result.host().stream().mapToDouble(p -> p.tMs() / 1000.0).toArray();
        double[] y = result.host().stream().mapToDouble(p -> p.freeBytes() / MIB).toArray();
        XYSeries free = chart.addSeries("host free memory", x, y);
        free.setMarker(SeriesMarkers.NONE);
        free.setLineStyle(new java.awt.BasicStroke(1f, java.awt.BasicStroke.CAP_BUTT, java.awt.BasicStroke.JOIN_MITER, 10f,
            new float[] {6f, 4f}, 0f));
        free.setLineColor(java.awt.Color.GRAY);
        return chart;
    }

    /** Writes the chart of {@code result} to {@code file} as PNG, exactly that name. */
    static void write(OvercommitResult result, Path file) throws IOException {
        Files.write(file, BitmapEncoder.getBitmapBytes(chart(result), BitmapEncoder.BitmapFormat.PNG));
    }
}
