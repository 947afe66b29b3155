//! `faultline status`: each service's readiness and its dependencies, from `/readyz`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use servicekit::client::HttpClient;

use crate::serve::Service;

/// Arguments of `faultline status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Host where the admin listeners are.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The app (API) port of each service (CONTRACT.md).
pub fn app_port(service: Service) -> u16 {
    match service {
        Service::Gateway => 8080,
        Service::Orders => 8081,
        Service::Fulfillment => 8082,
    }
}

/// The admin port of each service (CONTRACT.md).
pub fn admin_port(service: Service) -> u16 {
    match service {
        Service::Gateway => 9080,
        Service::Orders => 9081,
        Service::Fulfillment => 9082,
    }
}

/// One service's readiness: `Ok(checks)` when ready, `Err(reason or checks)` otherwise.
pub async fn readiness(
    client: &HttpClient,
    host: &str,
    service: Service,
) -> (bool, serde_json::Value) {
    let url = format!("http://{host}:{}/readyz", admin_port(service));
    match client.get(&url, Duration::from_secs(3)).await {
        Ok(r) => {
            let body = r.json::<serde_json::Value>().unwrap_or_default();
            (r.status.is_success(), body)
        }
        Err(e) => (
            false,
            serde_json::json!({"status": "unreachable", "error": e.to_string()}),
        ),
    }
}

pub async fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let client = HttpClient::new();
    let order = [Service::Gateway, Service::Orders, Service::Fulfillment];
    let results =
        futures_util::future::join_all(order.iter().map(|s| readiness(&client, &args.host, *s)))
            .await;
    let all_ready = results.iter().all(|(ok, _)| *ok);
    if args.json {
        let map: serde_json::Map<String, serde_json::Value> = order
            .iter()
            .zip(&results)
            .map(|(s, (_, body))| (s.name().to_owned(), body.clone()))
            .collect();
        println!("{}", serde_json::Value::Object(map));
    } else {
        println!("{:<12} {:<11} {:<24} checks", "service", "state", "admin");
        for (service, (ok, body)) in order.iter().zip(&results) {
            let checks = match body.get("checks").and_then(|c| c.as_object()) {
                Some(c) => c
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("?")))
                    .collect::<Vec<_>>()
                    .join("  "),
                None => body
                    .get("error")
                    .and_then(|e| e.as_str())
                    .unwrap_or("")
                    .to_owned(),
            };
            let state = if *ok {
                "ready"
            } else if body["status"] == "unreachable" {
                "DOWN"
            } else {
                "NOT READY"
            };
            println!(
                "{:<12} {:<11} {:<24} {}",
                service.name(),
                state,
                format!("{}:{}", args.host, admin_port(*service)),
                checks
            );
        }
    }
    Ok(if all_ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
