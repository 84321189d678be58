package io.vmpage.bench.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.vmpage.mmu.Access;
import io.vmpage.mmu.ControlRegisters;
import io.vmpage.mmu.Ept;
import io.vmpage.mmu.Fault;
import io.vmpage.mmu.MachineMemory;
import io.vmpage.mmu.MemoryImage;
import io.vmpage.mmu.Mmu;
import io.vmpage.mmu.NativeMemoryException;
import io.vmpage.mmu.MmuConfig;
import io.vmpage.mmu.Pte;
import io.vmpage.mmu.Translation;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code vmpage walk}: one cold page walk through the tables in a raw physical-memory image (see
 * {@link MemoryImage} for the format), as the processor would do it, optionally nested under an EPT held in
 * the same image. Reports the guest-physical and host-physical address, the page size and the number of
 * paging-structure references, or the architectural fault the walk ends in (#PF with its error code, #GP,
 * EPT violation with its exit qualification, EPT misconfiguration), as text or as one JSON object.
 *
 * <p>The image file is never modified: it is loaded into machine memory and the walk's accessed/dirty
 * updates land in that copy. A fault is an answer (exit 0); malformed input (a missing or empty image, an
 * unparsable number, a table outside the image) and an image the host has no memory to load are a
 * one-line error and exit 2.
 */
@Command(name = "walk",
    mixinStandardHelpOptions = true,
    versionProvider = Cli.Version.class,
    description = {"Walks the x86-64 page tables (and optionally an EPT) in a raw physical-memory image for one address.",
        "The image is a flat file: file offset N = physical address N. It is not modified."})
public final class WalkCommand implements Callable<Integer> {
    private static final ObjectMapper JSON = new ObjectMapper();
    /** Bits 63:52 of CR3 and of an EPTP: reserved (MAXPHYADDR is 52 here). */
    private static final long RESERVED_HIGH = 0xFFF0_0000_0000_0000L;
    /** EPTP bits 11:7: reserved. */
    private static final long EPTP_RESERVED_LOW = 0xF80L;

    @Spec
    CommandSpec spec;

    @Option(names = "--image", required = true, paramLabel = "FILE", description = "Raw physical-memory image.")
    Path image;

    @Option(names = "--cr3", required = true, paramLabel = "ADDR",
        description = "CR3: physical address of the PML4 (PML5 with --levels 5); bits 11:0 are ignored."
            + " Guest-physical with --eptp.")
    String cr3Text;

    @Option(names = "--gva", required = true, paramLabel = "ADDR", description = "Linear (guest-virtual) address.")
    String gvaText;

    @Option(names = "--access", paramLabel = "KIND", defaultValue = "read",
        description = "read, write or fetch (default: ${DEFAULT-VALUE}).")
    String accessText;

    @Option(names = "--user", description = "User-mode access (default: supervisor).")
    boolean user;

    @Option(names = "--levels", paramLabel = "N", defaultValue = "4",
        description = "Paging levels, 4 or 5 (5 sets CR4.LA57). Default: ${DEFAULT-VALUE}.")
    int levels;

    @Option(names = "--eptp", paramLabel = "ADDR",
        description = "EPT pointer (root | (levels-1) << 3 | AD << 6 | memory type): nest the walk under the EPT"
            + " in the same image.")
    String eptpText;

    @Option(names = "--wp", description = "CR0.WP: supervisor writes honour read-only pages.")
    boolean wp;

    @Option(names = "--nxe", description = "EFER.NXE: honour the execute-disable (NX) bit.")
    boolean nxe;

    @Option(names = "--smep", description = "CR4.SMEP: supervisor fetches from user pages fault.")
    boolean smep;

    @Option(names = "--json", arity = "0..1", fallbackValue = "-", paramLabel = "FILE",
        description = "Write one JSON object to FILE, or to stdout when FILE is omitted or '-' (then nothing else"
            + " goes to stdout).")
    String json;

    /** What the walk was asked to do, after validation. */
    private record Request(long cr3, long gva, int access, long eptp) {
    }

    @Override
    public Integer call() {
        Request req = request();
        Translation t = new Translation();
        try (MachineMemory memory = MemoryImage.load(image)) {
            checkInImage("CR3 table base", req.cr3 & Pte.ADDRESS_MASK, req.eptp == 0, memory);
            checkInImage("EPTP root", req.eptp & Pte.ADDRESS_MASK, req.eptp != 0, memory);
            Mmu mmu = new Mmu(memory, MmuConfig.uncached().withMaxPhysAddrBits(52));
            mmu.setCr0(ControlRegisters.CR0_PG | (wp ? ControlRegisters.CR0_WP : 0));
            mmu.setCr4((levels == 5 ? ControlRegisters.CR4_LA57 : 0) | (smep ? ControlRegisters.CR4_SMEP : 0));
            mmu.setEfer(nxe ? ControlRegisters.EFER_NXE : 0);
            mmu.movToCr3(req.cr3);
            mmu.enter(req.eptp != 0 ? 1 : 0, req.eptp);
            mmu.translate(req.gva, req.access, t);
            if (t.fault == Fault.MACHINE_CHECK) {
                throw new Cli.UsageException("page-table reference " + Units.hex(t.faultAddress)
                    + " is beyond the image (" + memory.size() + " bytes)");
            }
        } catch (UncheckedIOException e) {
            throw new Cli.UsageException(e.getMessage());
        } catch (NativeMemoryException e) { // the image is loaded into machine memory of its size
            throw new Cli.UsageException("--image " + image + ": cannot load it into memory: " + e.getMessage());
        }

        Cli.emit(spec.commandLine().getOut(), json, () -> json(t), () -> report(req, t));
        return Cli.OK;
    }

    // ------------------------------------------------------------------ input

    private Request request() {
        if (levels != 4 && levels != 5) {
            throw new Cli.UsageException("--levels must be 4 or 5, not " + levels);
        }
        long cr3 = number("--cr3", cr3Text);
        if ((cr3 & RESERVED_HIGH) != 0) {
            throw new Cli.UsageException("--cr3 " + Units.hex(cr3) + " sets reserved bits 63:52");
        }
        long gva = number("--gva", gvaText);
        int access;
        switch (accessText.strip().toLowerCase(Locale.ROOT)) {
            case "read": access = Access.READ; break;
            case "write": access = Access.WRITE; break;
            case "fetch": access = Access.FETCH; break;
            default: throw new Cli.UsageException("--access must be read, write or fetch, not '" + accessText + "'");
        }
        if (user) {
            access |= Access.USER;
        }
        long eptp = 0;
        if (eptpText != null) {
            eptp = number("--eptp", eptpText);
            int walk = (int) ((eptp & Ept.EPTP_WALK_MASK) >>> Ept.EPTP_WALK_SHIFT);
            if (Ept.levels(eptp) == 0) {
                throw new Cli.UsageException("--eptp " + Units.hex(eptp) + ": page-walk length field (bits 5:3) is "
                    + walk + ", must be 3 (4-level EPT) or 4 (5-level EPT)");
            }
            long type = eptp & 7;
            if (type != 0 && type != Ept.EPTP_MEMORY_TYPE_WB) {
                throw new Cli.UsageException("--eptp " + Units.hex(eptp) + ": memory type (bits 2:0) is " + type
                    + ", must be 0 (UC) or 6 (WB)");
            }
            if ((eptp & (RESERVED_HIGH | EPTP_RESERVED_LOW)) != 0) {
                throw new Cli.UsageException("--eptp " + Units.hex(eptp) + " sets reserved bits (63:52 or 11:7)");
            }
        }
        return new Request(cr3, gva, access, eptp);
    }

    private static long number(String option, String text) {
        try {
            return Units.parseAddress(text);
        } catch (IllegalArgumentException e) {
            throw new Cli.UsageException(option + ": " + e.getMessage());
        }
    }

    /** A root table (4 KiB at {@code base}) must lie inside the image when it is a host-physical address. */
    private static void checkInImage(String what, long base, boolean hostPhysical, MachineMemory memory) {
        if (hostPhysical && !memory.contains(base, MachineMemory.FRAME_SIZE)) {
            throw new Cli.UsageException(what + " " + Units.hex(base) + " is beyond the image (" + memory.size()
                + " bytes)");
        }
    }

    // ------------------------------------------------------------------ output

    /** The JSON object (one line). */
    private static String json(Translation t) {
        ObjectNode o = JSON.createObjectNode();
        o.put("gva", Units.hex(t.va));
        putHex(o, "gpa", t.gpa >= 0 ? t.gpa : null);
        putHex(o, "hpa", t.ok() ? t.hpa : null);
        if (t.ok()) {
            o.put("page_size", t.pageSize());
        } else {
            o.putNull("page_size");
        }
        o.put("refs", t.refs);
        if (t.ok()) {
            o.putNull("fault");
        } else {
            ObjectNode f = o.putObject("fault");
            f.put("type", Fault.name(t.fault));
            if (t.fault == Fault.PAGE_FAULT) {
                f.put("error_code", t.errorCode);
            }
            f.put("address", Units.hex(t.faultAddress));
            if (t.fault == Fault.EPT_VIOLATION) {
                f.put("qualification", Units.hex(t.qualification));
            }
        }
        try {
            return JSON.writeValueAsString(o);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private static void putHex(ObjectNode o, String field, Long value) {
        if (value == null) {
            o.putNull(field);
        } else {
            o.put(field, Units.hex(value));
        }
    }

    /** The human-readable report. */
    private String report(Request req, Translation t) {
        StringBuilder b = new StringBuilder();
        String mode = (Access.isUser(req.access) ? "user " : "supervisor ")
            + (Access.isFetch(req.access) ? "fetch" : Access.isWrite(req.access) ? "write" : "read");
        b.append(mode).append(" at ").append(Units.hex(req.gva)).append(": ").append(levels).append("-level paging, CR3 ")
            .append(Units.hex(req.cr3));
        if (req.eptp != 0) {
            b.append(", EPTP ").append(Units.hex(req.eptp)).append(" (").append(Ept.levels(req.eptp)).append("-level EPT")
                .append((req.eptp & Ept.EPTP_AD) != 0 ? ", A/D on" : "").append(')');
        } else {
            b.append(", no EPT");
        }
        b.append("; CR0.WP=").append(wp ? 1 : 0).append(" EFER.NXE=").append(nxe ? 1 : 0)
            .append(" CR4.SMEP=").append(smep ? 1 : 0).append('\n');
        if (t.ok()) {
            line(b, "gpa", Units.hex(t.gpa));
            line(b, "hpa", Units.hex(t.hpa) + (req.eptp == 0 ? " (no EPT: same as gpa)" : ""));
            line(b, "page size", sizeName(t.pageSize()));
        } else {
            if (t.gpa >= 0) {
                line(b, "gpa", Units.hex(t.gpa));
            }
            switch (t.fault) {
                case Fault.PAGE_FAULT:
                    line(b, "fault", "page fault (#PF), CR2 = " + Units.hex(t.faultAddress));
                    line(b, "error code", Units.hex(t.errorCode) + " = " + errorCodeBits(t.errorCode));
                    break;
                case Fault.GENERAL_PROTECTION:
                    line(b, "fault", "general protection (#GP(0)): " + Units.hex(t.faultAddress) + " is not canonical"
                        + " (bits 63:" + (levels == 5 ? 57 : 48) + " must copy bit " + (levels == 5 ? 56 : 47) + ")");
                    break;
                case Fault.EPT_VIOLATION:
                    line(b, "fault", "EPT violation at guest-physical " + Units.hex(t.faultAddress));
                    line(b, "qualification", Units.hex(t.qualification) + " = " + qualificationBits(t.qualification));
                    break;
                case Fault.EPT_MISCONFIG:
                    line(b, "fault", "EPT misconfiguration at guest-physical " + Units.hex(t.faultAddress)
                        + " (reserved bits, write without read, or a bad memory type in an EPT entry)");
                    break;
                default:
                    line(b, "fault", Fault.name(t.fault) + " at " + Units.hex(t.faultAddress));
                    break;
            }
        }
        line(b, "refs", t.refs + " paging-structure reference" + (t.refs == 1 ? "" : "s"));
        return b.toString();
    }

    private static void line(StringBuilder b, String label, String value) {
        b.append("  ").append(String.format(Locale.ROOT, "%-14s", label)).append(value).append('\n');
    }

    private static String sizeName(long bytes) {
        return bytes >= 1L << 30 ? (bytes >> 30) + " GiB" : bytes >= 1L << 20 ? (bytes >> 20) + " MiB" : (bytes >> 10) + " KiB";
    }

    /** The #PF error code spelled out, bit by bit. */
    static String errorCodeBits(int code) {
        List<String> bits = new ArrayList<>();
        bits.add((code & Fault.PF_P) != 0 ? "P (protection violation)" : "not P (page not present)");
        bits.add((code & Fault.PF_W) != 0 ? "W (write)" : "read");
        bits.add((code & Fault.PF_U) != 0 ? "U (user mode)" : "supervisor mode");
        if ((code & Fault.PF_RSVD) != 0) {
            bits.add("RSVD (reserved bit set in a paging-structure entry)");
        }
        if ((code & Fault.PF_ID) != 0) {
            bits.add("I/D (instruction fetch)");
        }
        return String.join(", ", bits);
    }

    /** The EPT-violation exit qualification spelled out, bit by bit. */
    static String qualificationBits(long q) {
        List<String> bits = new ArrayList<>();
        boolean read = (q & Fault.QUAL_READ) != 0;
        boolean write = (q & Fault.QUAL_WRITE) != 0;
        if (read && write) {
            bits.add("data read and write (with EPT A/D a guest paging-structure access counts as a write)");
        } else if (read) {
            bits.add("data read");
        } else if (write) {
            bits.add("data write");
        }
        if ((q & Fault.QUAL_FETCH) != 0) {
            bits.add("instruction fetch");
        }
        long perms = (q >>> Fault.QUAL_PERMISSIONS_SHIFT) & 7;
        bits.add("EPT allows " + (perms == 0 ? "nothing (not present)"
            : ((perms & 1) != 0 ? "r" : "-") + ((perms & 2) != 0 ? "w" : "-") + ((perms & 4) != 0 ? "x" : "-")));
        if ((q & Fault.QUAL_GLA_VALID) != 0) {
            bits.add("guest linear address valid");
            bits.add((q & Fault.QUAL_FINAL_TRANSLATION) != 0 ? "access to the final translation"
                : "access to a guest paging-structure entry");
        }
        return String.join(", ", bits);
    }
}
