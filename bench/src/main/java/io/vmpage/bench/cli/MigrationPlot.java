package io.vmpage.bench.cli;

import io.vmpage.migration.MigrationReport;
import java.awt.BasicStroke;
import java.awt.Color;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import org.knowm.xchart.BitmapEncoder;
import org.knowm.xchart.CategoryChart;
import org.knowm.xchart.CategoryChartBuilder;
import org.knowm.xchart.CategorySeries;
import org.knowm.xchart.style.Styler;
import org.knowm.xchart.style.markers.SeriesMarkers;

/**
 * The {@code migrate --plot} figure, after the per-round figures of Clark et al., "Live Migration of
 * Virtual Machines" (NSDI 2005): one bar per round for the pages sent, the round sent with the source
 * paused (the stop-and-copy, or post-copy's push) in its own colour, a line for the pages the guest
 * dirtied while each round was sent, and the downtime, mode, paging and stop reason in the title and
 * the axis title. Drawn by XChart, headless.
 */
final class MigrationPlot {
    static {
        // No window system. First in the class: java.awt.Color's own initialization reads (and fixes) it.
        if (System.getProperty("java.awt.headless") == null) {
            System.setProperty("java.awt.headless", "true");
        }
    }

    static final int WIDTH = 1000;
    static final int HEIGHT = 600;
    /** Up to this many rounds each bar carries its value and the paused one says so; beyond, they would overlap. */
    private static final int LABELLED_ROUNDS = 12;
    /** Up to this many rounds every round is named on the axis and has a marker on the line. */
    private static final int NAMED_ROUNDS = 40;

    static final Color RUNNING = new Color(0x1F, 0x77, 0xB4);
    static final Color PAUSED = new Color(0xD6, 0x27, 0x28);
    private static final Color DIRTIED = new Color(0x2C, 0x2C, 0x2C);

    private MigrationPlot() {
    }

    /** The chart of {@code report}: categories are the rounds, in order. */
    static CategoryChart chart(MigrationReport report) {
        boolean labelled = report.perRound().size() <= LABELLED_ROUNDS;
        List<String> rounds = new ArrayList<>();
        List<Long> sentRunning = new ArrayList<>();
        List<Long> sentPaused = new ArrayList<>();
        List<Long> dirtied = new ArrayList<>();
        List<String> pausedRounds = new ArrayList<>();
        for (MigrationReport.Round r : report.perRound()) {
            // a bar in one of the two series, a gap (null) in the other: one bar per round, coloured by the source's state
            rounds.add(r.sourcePaused() && labelled ? r.round() + " (paused)" : Integer.toString(r.round()));
            sentRunning.add(r.sourcePaused() ? null : r.pagesSent());
            sentPaused.add(r.sourcePaused() ? r.pagesSent() : null);
            dirtied.add(r.pagesDirtied());
            if (r.sourcePaused()) {
                pausedRounds.add(Integer.toString(r.round()));
            }
        }
        String mode = switch (report.mode()) {
            case PRECOPY -> "Pre-copy";
            case STOPCOPY -> "Stop-and-copy";
            case POSTCOPY -> "Post-copy";
            case HYBRID -> "Hybrid (pre-copy, then post-copy)";
        };
        String paused = switch (report.mode()) {
            case POSTCOPY, HYBRID -> "pages pushed, source paused (post-copy)";
            default -> "pages sent, source paused (stop-and-copy)";
        };
        CategoryChart chart = new CategoryChartBuilder().width(WIDTH).height(HEIGHT)
            .title(String.format(Locale.ROOT, "%s migration of a %s guest, %s paging: downtime %.1f ms, total %.0f ms", mode,
                size(report.memoryBytes()), report.paging().toLowerCase(Locale.ROOT), report.downtimeNanos() / 1e6,
                report.totalNanos() / 1e6))
            .xAxisTitle(String.format(Locale.ROOT, "round (%d %s%s; stop reason: %s)", report.rounds(),
                report.rounds() == 1 ? "round" : "rounds", pausedRounds.isEmpty() ? ""
                    : ", " + (pausedRounds.size() == 1 ? "round " : "rounds ") + String.join(", ", pausedRounds)
                        + " sent with the source paused",
                report.stopReason().name().toLowerCase(Locale.ROOT)))
            .yAxisTitle("pages (4 KiB)")
            .build();
        var style = chart.getStyler();
        style.setLegendPosition(Styler.LegendPosition.OutsideS);
        style.setLegendLayout(Styler.LegendLayout.Horizontal);
        style.setOverlapped(true);
        style.setLabelsVisible(labelled);
        if (report.perRound().size() > NAMED_ROUNDS) {
            style.setXAxisMaxLabelCount(NAMED_ROUNDS / 2);
        }
        style.setLabelsRotation(0);
        style.setLabelsFontColorAutomaticEnabled(false);
        style.setLabelsFontColor(Color.BLACK);
        style.setLabelsPosition(1.0); // on top of each bar
        style.setYAxisDecimalPattern("#,##0");
        style.setDecimalPattern("#,##0");
        style.setChartBackgroundColor(Color.WHITE);
        style.setPlotGridVerticalLinesVisible(false);
        style.setAvailableSpaceFill(0.6);
        style.setYAxisMin(0.0);
        // a little headroom above the tallest bar; XChart puts no ticks between 0 and a lone value otherwise
        long top = report.perRound().stream().mapToLong(r -> Math.max(r.pagesSent(), r.pagesDirtied())).max().orElse(0);
        style.setYAxisMax(Math.max(10.0, top * 1.08));

        boolean running = sentRunning.stream().anyMatch(v -> v != null);
        if (running) {
            chart.addSeries("pages sent, source running", rounds, sentRunning).setFillColor(RUNNING);
        }
        chart.addSeries(paused, rounds, sentPaused).setFillColor(PAUSED);
        if (!running) {
            return chart; // stop-and-copy alone, post-copy: the guest did not run while pages were sent; nothing dirtied
        }
        CategorySeries line = chart.addSeries("pages dirtied while the round was sent", rounds, dirtied);
        line.setChartCategorySeriesRenderStyle(CategorySeries.CategorySeriesRenderStyle.Line);
        line.setLineColor(DIRTIED);
        line.setLineStyle(new BasicStroke(2f));
        line.setMarker(report.perRound().size() > NAMED_ROUNDS ? SeriesMarkers.NONE : SeriesMarkers.CIRCLE);
        line.setMarkerColor(DIRTIED);
        return chart;
    }

    /** Writes the chart of {@code report} to {@code file} as PNG, exactly that name (no extension added). */
    static void write(MigrationReport report, Path file) throws IOException {
        Files.write(file, BitmapEncoder.getBitmapBytes(chart(report), BitmapEncoder.BitmapFormat.PNG));
    }

    private static String size(long bytes) {
        return bytes % (1L << 30) == 0 ? (bytes >> 30) + " GiB" : String.format(Locale.ROOT, "%.0f MiB", bytes / (double) (1 << 20));
    }
}
