package io.vmpage.migration;

import io.vmpage.engine.Vm;
import java.nio.charset.StandardCharsets;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Device state: what a VM carries outside guest memory and its vCPU registers, moved at the
 * switch-over as QEMU moves its devices' vmstate sections (each named by its device, loaded on the
 * destination in the order the source saved them). The guest kernel model is one such device
 * ({@code GuestKernel.saveState}/{@code restore}), a {@code GuestProgram} another.
 *
 * <p>The source {@link #save}s a device under a name: its saver runs once, with the VM paused, after the
 * vCPU state. The destination {@link #load}s one under the same name: its loader runs with the VM's
 * memory and vCPU state in place and before the VM runs there (at the END of pre-copy and stop-and-copy,
 * at post-copy's switch-over). As in QEMU, a stream carrying a device the destination has no loader for
 * is refused ("unknown section"), and a loader whose device is not in the stream is not called. A loader
 * that throws rejects the stream: the destination discards its VM. In-process, one {@code Devices} holds
 * both sides.
 */
public final class Devices {
    /** Longest device name, in UTF-8 bytes (one length byte on the wire). */
    public static final int MAX_NAME_BYTES = 255;
    /** Largest state of one device the destination accepts. */
    public static final int MAX_STATE_BYTES = 64 << 20;

    /** Source side: the device's state now (the VM is paused). */
    @FunctionalInterface
    public interface Saver {
        byte[] save();
    }

    /** Destination side: puts the device's saved {@code state} in place on {@code vm}. */
    @FunctionalInterface
    public interface Loader {
        void load(Vm vm, byte[] state);
    }

    private final Map<String, Saver> savers = new LinkedHashMap<>();
    private final Map<String, Loader> loaders = new LinkedHashMap<>();

    /** No devices: the VM's memory and vCPUs are all there is. */
    public static Devices none() {
        return new Devices();
    }

    /** Saves device {@code name} on the source; devices go in the order they were added. */
    public Devices save(String name, Saver saver) {
        check(name);
        if (savers.putIfAbsent(name, java.util.Objects.requireNonNull(saver)) != null) {
            throw new IllegalArgumentException("device " + name + " is saved twice");
        }
        return this;
    }

    /** Loads device {@code name} on the destination when the stream carries it. */
    public Devices load(String name, Loader loader) {
        check(name);
        if (loaders.putIfAbsent(name, java.util.Objects.requireNonNull(loader)) != null) {
            throw new IllegalArgumentException("device " + name + " is loaded twice");
        }
        return this;
    }

    /** Source: every device's state, in order. */
    Map<String, byte[]> saveAll() {
        Map<String, byte[]> states = new LinkedHashMap<>();
        for (Map.Entry<String, Saver> e : savers.entrySet()) {
            byte[] state = e.getValue().save();
            if (state == null || state.length > MAX_STATE_BYTES) {
                throw new MigrationException("device " + e.getKey() + " saved " + (state == null ? "no state"
                    : state.length + " bytes, more than the " + MAX_STATE_BYTES + " a destination takes"));
            }
            states.put(e.getKey(), state);
        }
        return Collections.unmodifiableMap(states);
    }

    /** Destination: whether a device of this name can be loaded (asked as its first record arrives). */
    boolean loads(String name) {
        return loaders.containsKey(name);
    }

    /** Destination: loads every device the stream carried, in the stream's order. */
    void loadAll(Vm vm, Map<String, byte[]> states) {
        for (Map.Entry<String, byte[]> e : states.entrySet()) {
            try {
                loaders.get(e.getKey()).load(vm, e.getValue());
            } catch (RuntimeException x) {
                throw new MigrationException("device " + e.getKey() + " rejected its state: " + x.getMessage(), x);
            }
        }
    }

    private static void check(String name) {
        int bytes = name.getBytes(StandardCharsets.UTF_8).length;
        if (bytes == 0 || bytes > MAX_NAME_BYTES) {
            throw new IllegalArgumentException("a device name is 1 to " + MAX_NAME_BYTES + " UTF-8 bytes: '" + name + "'");
        }
    }
}
