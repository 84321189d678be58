package io.vmpage.engine;

import java.lang.annotation.Documented;
import java.lang.annotation.ElementType;
import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;
import java.lang.annotation.Target;

/**
 * Marks a type of the engine's internal interface: public only because the engine's packages reach
 * each other through it (Java has no friend packages), not part of the API an embedder programs
 * against. It may change in any release. The paging backends, the mutating views of the frame table
 * and of the guest-physical map, the engine side of the dirty log and the write-protect protocol carry
 * it. The {@code bench} module's {@code InternalApiTest} fails when {@code bench} or {@code migration}
 * use a type that carries it, or anything in {@code io.vmpage.engine.paging}; the {@code stress} module
 * may, since it proves the internal protocols on the code that runs them.
 */
@Documented
@Retention(RetentionPolicy.RUNTIME)
@Target({ElementType.TYPE, ElementType.PACKAGE})
public @interface Internal {
}
