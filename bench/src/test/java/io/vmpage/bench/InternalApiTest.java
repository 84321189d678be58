package io.vmpage.bench;

import static com.tngtech.archunit.lang.syntax.ArchRuleDefinition.noClasses;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;

import com.tngtech.archunit.base.DescribedPredicate;
import com.tngtech.archunit.core.domain.JavaClass;
import com.tngtech.archunit.core.domain.JavaClasses;
import com.tngtech.archunit.core.importer.ClassFileImporter;
import com.tngtech.archunit.core.importer.ImportOption;
import com.tngtech.archunit.lang.ArchRule;
import io.vmpage.engine.Internal;
import org.junit.jupiter.api.Test;

/**
 * The engine's internal interface ({@link Internal} types, and everything in
 * {@code io.vmpage.engine.paging}) is for the engine's own packages and the stress module: the CLI,
 * the benchmarks and migration program against the public API only, as an embedder does, so that API
 * is known to be enough and the internals stay free to change.
 */
class InternalApiTest {
    private static final DescribedPredicate<JavaClass> ENGINE_INTERNAL = new DescribedPredicate<>(
        "are the engine's internal interface (@Internal, or in io.vmpage.engine.paging)") {
        @Override
        public boolean test(JavaClass c) {
            JavaClass top = c;
            while (top.getEnclosingClass().isPresent()) {
                top = top.getEnclosingClass().get();
            }
            return c.isAnnotatedWith(Internal.class) || top.isAnnotatedWith(Internal.class)
                || c.getPackageName().startsWith("io.vmpage.engine.paging");
        }
    };

    private static final ArchRule PUBLIC_API_ONLY = noClasses()
        .that().resideInAnyPackage("io.vmpage.bench..", "io.vmpage.migration..")
        .should().dependOnClassesThat(ENGINE_INTERNAL)
        .because("the engine's internal interface is not API (see io.vmpage.engine.Internal)");

    @Test
    void benchAndMigrationUseOnlyThePublicEngineApi() {
        JavaClasses classes = new ClassFileImporter()
            .withImportOption(ImportOption.Predefined.DO_NOT_INCLUDE_JARS)
            .importPackages("io.vmpage.bench", "io.vmpage.migration"); // main and test classes
        assertFalse(classes.isEmpty(), "bench's classes were found");
        PUBLIC_API_ONLY.check(classes);
    }

    /** The rule can fail: a class that uses the internal write-protect protocol breaks it. */
    @Test
    void theRuleCatchesAUseOfTheInternalInterface() {
        JavaClasses offender = new ClassFileImporter().importClasses(io.vmpage.archcheck.UsesInternals.class);
        assertThrows(AssertionError.class, () -> PUBLIC_API_ONLY.check(offender));
    }
}
