//! `orders::ROUTES` names exactly what the fault middleware sees: a fault set on each declared
//! route acts on a request to it, and a route that does not exist is refused when set.

mod support;

use http::Method;
use servicekit::client::HttpClient;
use std::time::Duration;
use support::{Options, start};

#[tokio::test]
async fn every_declared_route_is_matched_by_route_faults() {
    let service = start(Options::default()).await;
    let client = HttpClient::new();
    let admin = format!("{}/admin/faults", service.admin);
    for route in orders::ROUTES {
        let spec = serde_json::json!({"kind": "http.error", "status": 418, "route": route});
        let set = client
            .send_json(Method::PUT, &admin, &spec, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(set.status, 201, "{route}: {:?}", set.body);
        let (method, template) = route.split_once(' ').unwrap();
        let r = service
            .send_raw(
                method.parse().unwrap(),
                &template.replace("{id}", "x"),
                b"{}".to_vec(),
            )
            .await;
        assert_eq!(r.status, 418, "{route}");
        let id = set.json::<serde_json::Value>().unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        client
            .request(
                Method::DELETE,
                &format!("{admin}/{id}"),
                None,
                Duration::from_secs(5),
            )
            .await
            .unwrap();
    }
    let spec = serde_json::json!({"kind": "http.error", "route": "POST /order"});
    let refused = client
        .send_json(Method::PUT, &admin, &spec, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(refused.status, 400);
    assert!(
        String::from_utf8_lossy(&refused.body).contains("has no route"),
        "{:?}",
        refused.body
    );
    service.stop().await;
}
