//! `servicekit::env`: defaults, values, and errors naming the variable.
//!
//! Its own test binary with a single test, because it changes the process environment.

use std::time::Duration;

use servicekit::env;

fn set(variable: &str, value: &str) {
    // SAFETY: this test binary has one test and no other threads reading the environment.
    unsafe { std::env::set_var(variable, value) };
}

#[test]
fn numbers_and_durations_take_defaults_values_and_name_the_variable_when_unusable() {
    assert_eq!(env::positive_u32("SERVICEKIT_TEST_U32", 7).unwrap(), 7);
    assert_eq!(
        env::millis("SERVICEKIT_TEST_MS", Duration::from_secs(2)).unwrap(),
        Duration::from_millis(2_000)
    );

    set("SERVICEKIT_TEST_U32", " 42 ");
    set("SERVICEKIT_TEST_MS", "250");
    assert_eq!(env::positive_u32("SERVICEKIT_TEST_U32", 7).unwrap(), 42);
    assert_eq!(
        env::millis("SERVICEKIT_TEST_MS", Duration::from_secs(2)).unwrap(),
        Duration::from_millis(250)
    );

    set("SERVICEKIT_TEST_U32", "4294967296");
    let err = env::positive_u32("SERVICEKIT_TEST_U32", 7).unwrap_err();
    assert_eq!(err.variable, "SERVICEKIT_TEST_U32");
    assert_eq!(err.value, "4294967296");
    assert_eq!(err.expected, "a positive whole number below 4294967296");

    set("SERVICEKIT_TEST_MS", "0");
    let err = env::millis("SERVICEKIT_TEST_MS", Duration::from_secs(2)).unwrap_err();
    assert_eq!(err.variable, "SERVICEKIT_TEST_MS");
    assert_eq!(err.expected, "a positive whole number");
}
