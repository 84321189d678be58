package io.vmpage.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;

import io.vmpage.mmu.ControlRegisters;
import io.vmpage.mmu.Fault;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/** Guest writes to CR0 and CR4 reach the hardware only where the paging mode can honour them. */
class ControlRegisterTest {
    private final Host host = Host.create(64L << 20);

    @AfterEach
    void close() {
        host.close();
    }

    private Vcpu cpu(PagingMode mode) {
        return host.createVm(VmConfig.of(8L << 20).withPaging(mode)).vcpu(0);
    }

    @Test
    void nestedGuestsOwnTheirControlRegisters() {
        Vcpu cpu = cpu(PagingMode.NESTED);
        cpu.setCr0(ControlRegisters.CR0_PG);
        assertFalse(cpu.mmu().registers().wp());
        cpu.setCr4(ControlRegisters.CR4_LA57);
        assertEquals(5, cpu.mmu().registers().levels());
    }

    @Test
    void aParavirtualGuestCannotClearWriteProtectOrSwitchTo5LevelPaging() {
        Vcpu cpu = cpu(PagingMode.PARAVIRTUAL);
        GuestFaultException wp = assertThrows(GuestFaultException.class, () -> cpu.setCr0(ControlRegisters.CR0_PG));
        assertEquals(Fault.GENERAL_PROTECTION, wp.fault());
        assertThrows(GuestFaultException.class, () -> cpu.setCr0(ControlRegisters.CR0_WP));
        assertThrows(GuestFaultException.class, () -> cpu.setCr4(ControlRegisters.CR4_LA57));
        assertEquals(4, cpu.mmu().registers().levels(), "refused writes change nothing");
        cpu.setCr4(ControlRegisters.CR4_PCIDE | ControlRegisters.CR4_PGE);
        cpu.setCr0(ControlRegisters.CR0_PG | ControlRegisters.CR0_WP);
    }

    @Test
    void shadowPagingKeepsWriteProtectOn() {
        Vcpu cpu = cpu(PagingMode.SHADOW);
        assertThrows(GuestFaultException.class, () -> cpu.setCr0(ControlRegisters.CR0_PG));
        cpu.setCr0(ControlRegisters.CR0_PG | ControlRegisters.CR0_WP);
        cpu.setCr4(ControlRegisters.CR4_LA57);
        assertEquals(5, cpu.mmu().registers().levels());
    }
}
