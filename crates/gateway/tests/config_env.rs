//! `Config::from_env`: the defaults, the variables, and errors naming the variable.
//!
//! Its own test binary with a single test, because it changes the process environment.

use std::time::Duration;

use gateway::Config;

fn set(vars: &[(&str, &str)]) {
    for (k, v) in vars {
        // SAFETY: this test binary has one test and no other threads reading the environment.
        unsafe { std::env::set_var(k, v) };
    }
}

fn clear(vars: &[&str]) {
    for k in vars {
        // SAFETY: as above.
        unsafe { std::env::remove_var(k) };
    }
}

const VARS: [&str; 11] = [
    "LISTEN_ADDR",
    "ADMIN_LISTEN_ADDR",
    "ORDERS_URL",
    "FULFILLMENT_URL",
    "GATEWAY_RATE_LIMIT_RPS",
    "GATEWAY_RATE_LIMIT_BURST",
    "GATEWAY_MAX_CONCURRENT_REQUESTS",
    "GATEWAY_ORDERS_TIMEOUT_MS",
    "GATEWAY_FULFILLMENT_TIMEOUT_MS",
    "GATEWAY_MAX_BODY_BYTES",
    "FAULTLINE_ADMIN_TOKEN",
];

#[test]
fn the_environment_overrides_the_defaults_and_bad_values_name_their_variable() {
    clear(&VARS);
    assert_eq!(Config::from_env().unwrap(), Config::default());

    set(&[
        ("LISTEN_ADDR", "0.0.0.0:18080"),
        ("ADMIN_LISTEN_ADDR", "0.0.0.0:19080"),
        ("ORDERS_URL", "http://orders:8081/"),
        ("FULFILLMENT_URL", "http://fulfillment:8082"),
        ("GATEWAY_RATE_LIMIT_RPS", "50"),
        ("GATEWAY_MAX_CONCURRENT_REQUESTS", "8"),
        ("GATEWAY_ORDERS_TIMEOUT_MS", "750"),
        ("FAULTLINE_ADMIN_TOKEN", " s3cret "),
    ]);
    let c = Config::from_env().unwrap();
    assert_eq!(c.listen_addr.to_string(), "0.0.0.0:18080");
    assert_eq!(c.admin_listen_addr.to_string(), "0.0.0.0:19080");
    assert_eq!(c.orders_url, "http://orders:8081");
    assert_eq!(c.fulfillment_url, "http://fulfillment:8082");
    assert_eq!(c.rate_limit_rps, 50);
    assert_eq!(
        c.rate_limit_burst, 50,
        "the burst follows the rate unless set"
    );
    assert_eq!(c.max_concurrent_requests, 8);
    assert_eq!(c.orders_timeout, Duration::from_millis(750));
    assert_eq!(c.fulfillment_timeout, Duration::from_secs(1));
    assert_eq!(c.admin_token.as_deref(), Some("s3cret"));
    assert_eq!(c.faults.service(), "gateway");
    assert_eq!(c.faults.supported(), gateway::FAULT_KINDS);

    set(&[("GATEWAY_RATE_LIMIT_BURST", "5")]);
    assert_eq!(Config::from_env().unwrap().rate_limit_burst, 5);

    for (var, bad) in [
        ("GATEWAY_RATE_LIMIT_RPS", "0"),
        ("GATEWAY_RATE_LIMIT_RPS", "99999999999"),
        ("GATEWAY_MAX_CONCURRENT_REQUESTS", "many"),
        ("ORDERS_URL", "https://orders:8081"),
        ("LISTEN_ADDR", "localhost"),
    ] {
        clear(&VARS);
        set(&[(var, bad)]);
        let err = Config::from_env().expect_err(bad);
        assert_eq!(err.variable, var);
        assert!(err.to_string().contains(var), "{err}");
    }
    clear(&VARS);
}
