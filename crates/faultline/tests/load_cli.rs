//! `faultline load`'s start-up check: nothing listening is an error at once; a gateway that
//! accepts but does not answer (an incident in progress) only gets a warning.

use std::process::Stdio;
use std::time::Duration;

async fn load(target: &str) -> (Option<i32>, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_faultline"))
            .args(["load", "--target", target, "--rps", "2", "--duration", "1s"])
            .env("OTEL_SDK_DISABLED", "true")
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("load finished")
    .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn nothing_listening_fails_at_once_but_a_hung_gateway_only_warns() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (code, stderr) = load(&format!("http://{closed}")).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot reach the gateway"), "{stderr}");

    let hung = fake_collector::black_hole().await;
    let (code, stderr) = load(&format!("http://{hung}")).await;
    assert!(stderr.contains("did not answer within 3 s"), "{stderr}");
    assert!(!stderr.contains("cannot reach the gateway"), "{stderr}");
    // Every request timed out, so the run itself still reports failure.
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no request succeeded"), "{stderr}");
}
