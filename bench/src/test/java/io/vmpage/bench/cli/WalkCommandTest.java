package io.vmpage.bench.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.vmpage.bench.Main;
import io.vmpage.mmu.Ept;
import io.vmpage.mmu.MachineMemory;
import io.vmpage.mmu.MemoryImage;
import io.vmpage.mmu.PageTables;
import io.vmpage.mmu.Pte;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.function.LongSupplier;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import picocli.CommandLine;

/**
 * {@code vmpage walk} end to end on one 8 MiB image built with {@link PageTables} and saved with
 * {@link MemoryImage}:
 * <pre>
 *   [1 MiB, 2 MiB)  host tables: 4-level and 5-level x86 tables, the 4-level EPT
 *   [4 MiB, 6 MiB)  the guest's RAM: guest-physical [0, 2 MiB) under the EPT (4 KiB pages, RWX, WB),
 *                   except gpa 0x1f0000 (EPT read-only) and 0x1f1000 (EPT write-only: misconfigured)
 *   guest tables    guest-physical [1 MiB, 2 MiB) (host [5 MiB, 6 MiB))
 * </pre>
 * None of the tables has an accessed or dirty bit set when saved.
 */
class WalkCommandTest {
    private static final long MIB = 1L << 20;
    private static final long IMAGE_SIZE = 8 * MIB;
    private static final long GUEST_BASE = 4 * MIB;

    // 1D, 4-level
    private static final long VA_4K = 0x0000_7F12_3456_7000L;
    private static final long PA_4K = 0x0030_0000L;
    private static final long VA_USER = 0x0040_0000L;
    private static final long VA_READ_ONLY = 0x0040_1000L;
    private static final long VA_NX = 0x0040_2000L;
    private static final long VA_2M = 0x0000_0040_0020_0000L;
    private static final long PA_2M = 0x0060_0000L;
    private static final long VA_1G = 0x0000_0080_4000_0000L;
    private static final long PA_1G = 0x4000_0000L;
    private static final long VA_BROKEN = 0x0000_0100_0000_0000L;
    private static final long BROKEN_TABLE = 0x7000_0000L;
    // 1D, 5-level
    private static final long VA_5 = 0x00AB_CDEF_1234_5000L;
    // 2D
    private static final long GVA = 0x0000_7F00_0000_1000L;
    private static final long GPA = 0x0008_0000L;
    private static final long GVA_EPT_READ_ONLY = 0x0000_7F00_0000_2000L;
    private static final long GPA_EPT_READ_ONLY = 0x001F_0000L;
    private static final long GVA_EPT_MISCONFIG = 0x0000_7F00_0000_3000L;
    private static final long GVA_EPT_UNMAPPED = 0x0000_7F00_0000_4000L;
    private static final long GPA_EPT_UNMAPPED = 0x0030_0000L;

    @TempDir
    static Path dir;

    private static Path image;
    private static byte[] imageBytes;
    private static long cr3;
    private static long cr3Five;
    private static long guestCr3;
    private static long eptp;
    private static long leaf4kOffset;

    private final ObjectMapper mapper = new ObjectMapper();
    private final StringWriter out = new StringWriter();
    private final StringWriter err = new StringWriter();

    @BeforeAll
    static void buildImage() throws IOException {
        try (MachineMemory m = MachineMemory.allocate(IMAGE_SIZE)) {
            LongSupplier hostTables = PageTables.bumpAllocator(m, MIB, 2 * MIB);
            PageTables t4 = new PageTables(m, PageTables.Format.X86, 4, hostTables);
            leaf4kOffset = t4.map(VA_4K, PA_4K, Pte.SHIFT_4K, Pte.P | Pte.RW);
            t4.map(VA_USER, 0x0030_1000L, Pte.SHIFT_4K, Pte.P | Pte.RW | Pte.US);
            t4.map(VA_READ_ONLY, 0x0030_2000L, Pte.SHIFT_4K, Pte.P);
            t4.map(VA_NX, 0x0030_3000L, Pte.SHIFT_4K, Pte.P | Pte.RW | Pte.NX);
            t4.map(VA_2M, PA_2M, Pte.SHIFT_2M, Pte.P | Pte.RW);
            t4.map(VA_1G, PA_1G, Pte.SHIFT_1G, Pte.P | Pte.RW);
            t4.map(VA_BROKEN, 0x0030_4000L, Pte.SHIFT_4K, Pte.P);
            t4.write(t4.entryAddress(VA_BROKEN, Pte.LEVEL_PDPT), Pte.entry(BROKEN_TABLE, Pte.P | Pte.RW));
            cr3 = t4.root();

            PageTables t5 = new PageTables(m, PageTables.Format.X86, 5, hostTables);
            t5.map(VA_5, 0x0030_5000L, Pte.SHIFT_4K, Pte.P);
            cr3Five = t5.root();

            PageTables ept = new PageTables(m, PageTables.Format.EPT, 4, hostTables);
            for (long gpa = 0; gpa < 2 * MIB; gpa += MachineMemory.FRAME_SIZE) {
                long perms = gpa == GPA_EPT_READ_ONLY ? Ept.R : gpa == GPA_EPT_READ_ONLY + 0x1000 ? Ept.W : Ept.RWX;
                ept.map(gpa, GUEST_BASE + gpa, Pte.SHIFT_4K, perms | Ept.MEMORY_TYPE_WB);
            }
            eptp = Ept.eptp(ept.root(), 4, false);

            long[] nextGuestTable = {MIB};
            PageTables guest = new PageTables(m, PageTables.Format.X86, 4, () -> {
                long gpa = nextGuestTable[0];
                nextGuestTable[0] += MachineMemory.FRAME_SIZE;
                return gpa; // the frame is still zero
            }, gpa -> gpa + GUEST_BASE);
            guest.map(GVA, GPA, Pte.SHIFT_4K, Pte.P | Pte.RW);
            guest.map(GVA_EPT_READ_ONLY, GPA_EPT_READ_ONLY, Pte.SHIFT_4K, Pte.P | Pte.RW);
            guest.map(GVA_EPT_MISCONFIG, GPA_EPT_READ_ONLY + 0x1000, Pte.SHIFT_4K, Pte.P | Pte.RW);
            guest.map(GVA_EPT_UNMAPPED, GPA_EPT_UNMAPPED, Pte.SHIFT_4K, Pte.P | Pte.RW);
            guestCr3 = guest.root();

            image = dir.resolve("ram.img");
            MemoryImage.save(m, image);
        }
        imageBytes = Files.readAllBytes(image);
    }

    // ------------------------------------------------------------------ harness

    private int vmpage(String... args) {
        CommandLine cl = Cli.newCommandLine(new Main());
        cl.setOut(new PrintWriter(out, true));
        cl.setErr(new PrintWriter(err, true));
        return cl.execute(args);
    }

    /** Runs {@code walk --json} on the image with {@code --cr3 cr3 --gva gva} plus {@code more}; exit 0 expected. */
    private JsonNode walk(long cr3, long gva, String... more) throws IOException {
        List<String> args = new ArrayList<>(List.of("walk", "--image", image.toString(), "--cr3", Units.hex(cr3),
            "--gva", Units.hex(gva), "--json"));
        args.addAll(Arrays.asList(more));
        int code = vmpage(args.toArray(String[]::new));
        assertEquals(Cli.OK, code, err.toString());
        assertEquals("", err.toString());
        JsonNode json = mapper.readTree(out.toString());
        assertTrue(json.isObject(), out.toString());
        return json;
    }

    /** Runs {@code walk} expecting exit 2 and one line on stderr; returns that line. */
    private String usageError(String... args) {
        assertEquals(Cli.USAGE, vmpage(args), "stdout: " + out + " stderr: " + err);
        List<String> lines = err.toString().lines().toList();
        assertEquals(1, lines.size(), err.toString());
        assertTrue(lines.get(0).startsWith("vmpage: "), lines.get(0));
        assertEquals("", out.toString());
        return lines.get(0);
    }

    private static void assertTranslated(JsonNode j, long gpa, long pageSize, int refs) {
        assertEquals(Units.hex(gpa), j.get("gpa").asText(), j.toString());
        assertEquals(Units.hex(gpa), j.get("hpa").asText(), j.toString());
        assertEquals(pageSize, j.get("page_size").asLong(), j.toString());
        assertEquals(refs, j.get("refs").asInt(), j.toString());
        assertTrue(j.get("fault").isNull(), j.toString());
    }

    private static JsonNode pageFault(JsonNode j, int errorCode, long address) {
        JsonNode f = j.get("fault");
        assertEquals("page_fault", f.get("type").asText(), j.toString());
        assertEquals(errorCode, f.get("error_code").asInt(), j.toString());
        assertEquals(Units.hex(address), f.get("address").asText(), j.toString());
        assertTrue(f.get("qualification") == null, j.toString());
        assertTrue(j.get("gpa").isNull() && j.get("hpa").isNull() && j.get("page_size").isNull(), j.toString());
        return f;
    }

    // ------------------------------------------------------------------ translations

    @Test
    void fourKiBPageTakesFourReferences() throws IOException {
        JsonNode j = walk(cr3, VA_4K + 0x123);
        assertEquals(Units.hex(VA_4K + 0x123), j.get("gva").asText());
        assertTranslated(j, PA_4K + 0x123, 4096, 4);
        assertEquals(List.of("gva", "gpa", "hpa", "page_size", "refs", "fault"), fieldNames(j));
    }

    @Test
    void largePagesEndTheWalkEarly() throws IOException {
        assertTranslated(walk(cr3, VA_2M + 0x1_2345), PA_2M + 0x1_2345, 2 * MIB, 3);
        out.getBuffer().setLength(0);
        assertTranslated(walk(cr3, VA_1G + 0x1234_5678), PA_1G + 0x1234_5678, 1L << 30, 2);
    }

    @Test
    void fiveLevelWalkTakesFiveReferences() throws IOException {
        assertTranslated(walk(cr3Five, VA_5 + 8, "--levels", "5"), 0x0030_5008L, 4096, 5);
    }

    @Test
    void fiveLevelAddressIsNotCanonicalWithFourLevels() throws IOException {
        JsonNode f = walk(cr3Five, VA_5).get("fault");
        assertEquals("general_protection", f.get("type").asText());
    }

    @Test
    void pcidBitsInCr3DoNotMoveTheTableBase() throws IOException {
        assertTranslated(walk(cr3 | 0xABC, VA_4K + 0x10), PA_4K + 0x10, 4096, 4);
    }

    @Test
    void decimalNumbersParse() throws IOException {
        vmpage("walk", "--image", image.toString(), "--cr3", Long.toString(cr3), "--gva", Long.toString(VA_4K), "--json");
        assertEquals(Units.hex(PA_4K), mapper.readTree(out.toString()).get("gpa").asText(), err.toString());
    }

    // ------------------------------------------------------------------ faults (exit 0)

    @Test
    void notPresentIsAPageFaultWithErrorCodeZero() throws IOException {
        long va = 0x0000_1234_0000_0000L;
        JsonNode j = walk(cr3, va + 5);
        pageFault(j, 0, va + 5);
        assertEquals(1, j.get("refs").asInt(), "the PML4 entry is not present");
    }

    @Test
    void notPresentWriteFromUserModeSetsWAndU() throws IOException {
        pageFault(walk(cr3, 0x0000_1234_0000_0000L, "--access", "write", "--user"), 0x6, 0x0000_1234_0000_0000L);
    }

    @Test
    void userReadOfASupervisorPageIsAProtectionFault() throws IOException {
        pageFault(walk(cr3, VA_4K, "--user"), 0x5, VA_4K);
    }

    @Test
    void userReadOfAUserPageTranslates() throws IOException {
        assertTranslated(walk(cr3, VA_USER, "--user"), 0x0030_1000L, 4096, 4);
    }

    @Test
    void supervisorWriteToReadOnlyPageFaultsOnlyWithWp() throws IOException {
        pageFault(walk(cr3, VA_READ_ONLY, "--access", "write", "--wp"), 0x3, VA_READ_ONLY);
        out.getBuffer().setLength(0);
        assertTranslated(walk(cr3, VA_READ_ONLY, "--access", "write"), 0x0030_2000L, 4096, 4);
    }

    @Test
    void fetchFromNxPageWithNxeFaultsWithInstructionFetchBit() throws IOException {
        pageFault(walk(cr3, VA_NX, "--access", "fetch", "--nxe"), 0x11, VA_NX);
    }

    @Test
    void nxBitWithoutNxeIsAReservedBit() throws IOException {
        pageFault(walk(cr3, VA_NX), 0x9, VA_NX);
    }

    @Test
    void smepFaultsSupervisorFetchFromUserPage() throws IOException {
        pageFault(walk(cr3, VA_USER, "--access", "fetch", "--smep"), 0x11, VA_USER);
        out.getBuffer().setLength(0);
        assertTranslated(walk(cr3, VA_USER, "--access", "fetch"), 0x0030_1000L, 4096, 4);
    }

    @Test
    void nonCanonicalAddressIsGeneralProtection() throws IOException {
        long va = 0x0000_8000_0000_0000L;
        JsonNode j = walk(cr3, va);
        JsonNode f = j.get("fault");
        assertEquals("general_protection", f.get("type").asText());
        assertEquals(Units.hex(va), f.get("address").asText());
        assertTrue(f.get("error_code") == null && f.get("qualification") == null, j.toString());
        assertEquals(0, j.get("refs").asInt());
    }

    // ------------------------------------------------------------------ 2D

    @Test
    void nestedWalkTakesTwentyFourReferences() throws IOException {
        JsonNode j = walk(guestCr3, GVA + 0x42, "--eptp", Units.hex(eptp));
        assertEquals(Units.hex(GPA + 0x42), j.get("gpa").asText(), j.toString());
        assertEquals(Units.hex(GUEST_BASE + GPA + 0x42), j.get("hpa").asText(), j.toString());
        assertNotEquals(j.get("gpa").asText(), j.get("hpa").asText());
        assertEquals(4096, j.get("page_size").asLong());
        assertEquals(24, j.get("refs").asInt());
        assertTrue(j.get("fault").isNull());
    }

    @Test
    void writeToAnEptReadOnlyPageIsAnEptViolation() throws IOException {
        JsonNode j = walk(guestCr3, GVA_EPT_READ_ONLY, "--eptp", Units.hex(eptp), "--access", "write");
        JsonNode f = j.get("fault");
        assertEquals("ept_violation", f.get("type").asText(), j.toString());
        assertEquals(Units.hex(GPA_EPT_READ_ONLY), f.get("address").asText());
        // data write | EPT readable | guest linear address valid | final translation
        assertEquals("0x18a", f.get("qualification").asText());
        assertTrue(f.get("error_code") == null);
        assertEquals(Units.hex(GPA_EPT_READ_ONLY), j.get("gpa").asText(), "the guest walk finished");
        assertTrue(j.get("hpa").isNull() && j.get("page_size").isNull());
    }

    @Test
    void guestPhysicalAddressOutsideTheEptIsAnEptViolationWithNoPermissions() throws IOException {
        JsonNode f = walk(guestCr3, GVA_EPT_UNMAPPED, "--eptp", Units.hex(eptp)).get("fault");
        assertEquals("ept_violation", f.get("type").asText());
        assertEquals(Units.hex(GPA_EPT_UNMAPPED), f.get("address").asText());
        assertEquals("0x181", f.get("qualification").asText());
    }

    @Test
    void withEptAccessedAndDirtyFlagsAGuestTableReadReportsReadAndWrite() throws IOException {
        // The guest's PML4 at gpa 0x1f0000, which the EPT maps read-only: a read without EPT A/D (the
        // PML4E there is zero, so the guest walk ends in #PF); with EPT A/D a write the EPT refuses.
        long pml4e = GPA_EPT_READ_ONLY + ((GVA >>> 39) & 511) * 8;
        JsonNode noAd = walk(GPA_EPT_READ_ONLY, GVA, "--eptp", Units.hex(eptp));
        assertEquals("page_fault", noAd.get("fault").get("type").asText(), noAd.toString());
        out.getBuffer().setLength(0);

        long eptpAd = Ept.eptp(eptp & Pte.ADDRESS_MASK, 4, true);
        JsonNode j = walk(GPA_EPT_READ_ONLY, GVA, "--eptp", Units.hex(eptpAd));
        JsonNode f = j.get("fault");
        assertEquals("ept_violation", f.get("type").asText(), j.toString());
        assertEquals(Units.hex(pml4e), f.get("address").asText());
        // data read | data write | EPT readable | guest linear address valid; bit 8 clear: a guest table
        assertEquals("0x8b", f.get("qualification").asText());

        out.getBuffer().setLength(0);
        assertEquals(Cli.OK, vmpage("walk", "--image", image.toString(), "--cr3", Units.hex(GPA_EPT_READ_ONLY),
            "--gva", Units.hex(GVA), "--eptp", Units.hex(eptpAd)), err.toString());
        String text = out.toString();
        assertTrue(text.contains("0x8b = data read and write (with EPT A/D a guest paging-structure access counts as"
            + " a write), EPT allows r--, guest linear address valid, access to a guest paging-structure entry"), text);
    }

    @Test
    void writeWithoutReadInEptIsAMisconfiguration() throws IOException {
        JsonNode f = walk(guestCr3, GVA_EPT_MISCONFIG, "--eptp", Units.hex(eptp)).get("fault");
        assertEquals("ept_misconfig", f.get("type").asText());
        assertEquals(Units.hex(GPA_EPT_READ_ONLY + 0x1000), f.get("address").asText());
        assertTrue(f.get("qualification") == null && f.get("error_code") == null);
    }

    // ------------------------------------------------------------------ the image is read-only

    @Test
    void walkThatSetsAccessedAndDirtyLeavesTheFileByteIdentical() throws IOException {
        assertEquals(0, leafInFile(leaf4kOffset) & (Pte.A | Pte.D), "saved without A/D");
        assertTranslated(walk(cr3, VA_4K, "--access", "write"), PA_4K, 4096, 4);
        out.getBuffer().setLength(0);
        walk(guestCr3, GVA, "--eptp", Units.hex(Ept.eptp(eptp & Pte.ADDRESS_MASK, 4, true)), "--access", "write");
        assertArrayEquals(imageBytes, Files.readAllBytes(image));
        assertEquals(0, leafInFile(leaf4kOffset) & (Pte.A | Pte.D));
    }

    private static long leafInFile(long offset) throws IOException {
        byte[] now = Files.readAllBytes(image);
        return ByteBuffer.wrap(now, (int) offset, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
    }

    // ------------------------------------------------------------------ output forms

    @Test
    void anImageTooLargeToLoadIsOneLineAndExitTwo() throws IOException {
        long size = 8L << 40; // 8 TiB, sparse: beyond RAM and swap here, so the kernel refuses the mapping
        Assumptions.assumeTrue(HostLimits.refusesMapping(size), "this host would map " + size + " bytes");
        Path huge = dir.resolve("huge.img");
        try (java.io.RandomAccessFile raf = new java.io.RandomAccessFile(huge.toFile(), "rw")) {
            raf.setLength(size);
        } catch (IOException tooLargeForThisFileSystem) {
            Assumptions.abort("cannot create an 8 TiB sparse file here: " + tooLargeForThisFileSystem.getMessage());
        }
        try {
            assertEquals(2, vmpage("walk", "--image", huge.toString(), "--cr3", "0x100000", "--gva", "0x7f1234567abc"));
            String message = err.toString().strip();
            assertEquals(1, message.lines().count(), message);
            assertTrue(message.startsWith("vmpage: --image " + huge + ": cannot load it into memory: cannot map"
                + " 8796093022208 bytes (8 TiB) of native memory: "), message);
            assertTrue(message.contains("(errno "), message);
        } finally {
            Files.delete(huge);
        }
    }

    @Test
    void humanReportDecodesTheErrorCode() {
        assertEquals(Cli.OK, vmpage("walk", "--image", image.toString(), "--cr3", Units.hex(cr3),
            "--gva", Units.hex(VA_4K), "--user", "--access", "write"), err.toString());
        String text = out.toString();
        assertTrue(text.contains("page fault"), text);
        assertTrue(text.contains("0x7 = P (protection violation), W (write), U (user mode)"), text);
        assertEquals("", err.toString());
    }

    @Test
    void humanReportDecodesTheQualification() {
        assertEquals(Cli.OK, vmpage("walk", "--image", image.toString(), "--cr3", Units.hex(guestCr3),
            "--gva", Units.hex(GVA_EPT_READ_ONLY), "--eptp", Units.hex(eptp), "--access", "write"));
        String text = out.toString();
        assertTrue(text.contains("EPT violation at guest-physical 0x1f0000"), text);
        assertTrue(text.contains("data write, EPT allows r--, guest linear address valid, access to the final translation"),
            text);
    }

    @Test
    void humanReportOfATranslation() {
        assertEquals(Cli.OK, vmpage("walk", "--image", image.toString(), "--cr3", Units.hex(cr3),
            "--gva", Units.hex(VA_2M)));
        String text = out.toString();
        assertTrue(text.contains("gpa           0x600000"), text);
        assertTrue(text.contains("2 MiB"), text);
        assertTrue(text.contains("3 paging-structure references"), text);
    }

    @Test
    void jsonToAFileKeepsTheReportOnStdout() throws IOException {
        Path file = dir.resolve("out.json");
        assertEquals(Cli.OK, vmpage("walk", "--image", image.toString(), "--cr3", Units.hex(cr3),
            "--gva", Units.hex(VA_4K), "--json", file.toString()));
        assertEquals(Units.hex(PA_4K), mapper.readTree(file.toFile()).get("gpa").asText());
        assertTrue(out.toString().contains("gpa"), out.toString());
        assertTrue(out.toString().startsWith("supervisor read"), out.toString());
    }

    @Test
    void jsonDashMeansStdoutAndNothingElse() throws IOException {
        assertEquals(Cli.OK, vmpage("walk", "--image", image.toString(), "--cr3", Units.hex(cr3),
            "--gva", Units.hex(VA_4K), "--json", "-"));
        assertEquals(1, out.toString().lines().count(), out.toString());
        assertEquals(Units.hex(PA_4K), mapper.readTree(out.toString()).get("gpa").asText());
    }

    private static List<String> fieldNames(JsonNode j) {
        List<String> names = new ArrayList<>();
        j.fieldNames().forEachRemaining(names::add);
        return names;
    }

    // ------------------------------------------------------------------ malformed input (exit 2)

    private String[] args(String cr3Value, String gva, String... more) {
        List<String> a = new ArrayList<>(List.of("walk", "--image", image.toString(), "--cr3", cr3Value, "--gva", gva));
        a.addAll(Arrays.asList(more));
        return a.toArray(String[]::new);
    }

    @Test
    void missingImage() {
        Path missing = dir.resolve("missing.img");
        String line = usageError("walk", "--image", missing.toString(), "--cr3", "0x1000", "--gva", "0", "--json");
        assertTrue(line.contains(missing.toString()) && line.contains("does not exist"), line);
    }

    @Test
    void emptyImage() throws IOException {
        Path empty = dir.resolve("empty.img");
        Files.write(empty, new byte[0]);
        String line = usageError("walk", "--image", empty.toString(), "--cr3", "0x1000", "--gva", "0");
        assertTrue(line.contains("empty"), line);
    }

    @ParameterizedTest
    @ValueSource(strings = {"zz", "0x", "-1", "0x1_0000_0000_0000_0000", ""})
    void unparsableCr3(String value) {
        String line = usageError(args(value, "0"));
        assertTrue(line.contains("--cr3"), line);
    }

    @Test
    void unparsableGvaAndEptp() {
        assertTrue(usageError(args(Units.hex(cr3), "0xg")).contains("--gva"));
        err.getBuffer().setLength(0);
        assertTrue(usageError(args(Units.hex(cr3), "0", "--eptp", "12q")).contains("--eptp"));
    }

    @ParameterizedTest
    @ValueSource(strings = {"3", "6", "0", "four"})
    void levelsOtherThanFourOrFive(String levels) {
        String line = usageError(args(Units.hex(cr3), "0", "--levels", levels));
        assertTrue(line.contains("--levels"), line);
    }

    @Test
    void unknownAccessKind() {
        String line = usageError(args(Units.hex(cr3), "0", "--access", "execute", "--json"));
        assertTrue(line.contains("read, write or fetch"), line);
    }

    @Test
    void cr3BeyondTheImage() {
        String line = usageError(args("0x10000000", "0", "--json"));
        assertTrue(line.contains("CR3 table base 0x10000000 is beyond the image (8388608 bytes)"), line);
    }

    @Test
    void cr3WithReservedHighBits() {
        String line = usageError(args("0x8000000000101000", "0"));
        assertTrue(line.contains("reserved"), line);
    }

    @Test
    void eptpRootBeyondTheImage() {
        String line = usageError(args(Units.hex(guestCr3), Units.hex(GVA), "--eptp",
            Units.hex(Ept.eptp(0x1000_0000L, 4, false))));
        assertTrue(line.contains("EPTP root 0x10000000 is beyond the image"), line);
    }

    @Test
    void pageTableReferenceBeyondTheImage() {
        String line = usageError(args(Units.hex(cr3), Units.hex(VA_BROKEN), "--json"));
        long entry = BROKEN_TABLE + ((long) Pte.index(VA_BROKEN, Pte.LEVEL_PD) << 3);
        assertTrue(line.contains("page-table reference " + Units.hex(entry) + " is beyond the image (8388608 bytes)"),
            line);
    }

    @ParameterizedTest
    @ValueSource(ints = {0, 1, 2, 5, 6, 7})
    void eptpWalkLengthOtherThanFourOrFiveLevels(int walkField) {
        long bad = (eptp & ~Ept.EPTP_WALK_MASK) | ((long) walkField << Ept.EPTP_WALK_SHIFT);
        String line = usageError(args(Units.hex(guestCr3), Units.hex(GVA), "--eptp", Units.hex(bad)));
        assertTrue(line.contains("page-walk length"), line);
    }

    @Test
    void eptpWithInvalidMemoryType() {
        String line = usageError(args(Units.hex(guestCr3), Units.hex(GVA), "--eptp", Units.hex(eptp & ~7L | 2)));
        assertTrue(line.contains("memory type"), line);
    }

    @Test
    void missingRequiredOption() {
        String line = usageError("walk", "--image", image.toString(), "--gva", "0");
        assertTrue(line.contains("--cr3"), line);
    }
}
