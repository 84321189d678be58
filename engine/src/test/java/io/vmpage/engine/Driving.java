package io.vmpage.engine;

/**
 * The two ways a program drives a vCPU, which concurrency tests run both of: a thread attached to it
 * ({@link Vcpu#attachThread}, the hot path) and one-off accesses from a thread that does not run it
 * (each access enters and leaves guest mode on its own).
 */
public enum Driving { ATTACHED, ONE_OFF }
