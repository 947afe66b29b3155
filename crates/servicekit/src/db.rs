//! What the services' database code shares: the `error.type` of a sqlx error, and reading a
//! `DATABASE_URL` for spans ([`postgres_server`]) and messages ([`redact`]).
//!
//! The [database conventions](https://opentelemetry.io/docs/specs/semconv/database/database-spans/)
//! ask for the database's own status code: a PostgreSQL SQLSTATE (`40001` serialization
//! failure, `40P01` deadlock, `23505` unique violation) or an SQLite result code (`5` busy,
//! `6` locked, `517` busy snapshot). Errors that never reached the database get a short class.

use telemetry::db::DbServer;

/// A low-cardinality `error.type` for `error`, for [`telemetry::db::instrument_with`].
pub fn sqlx_error_type(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => db
            .code()
            .map(|c| c.into_owned())
            .unwrap_or_else(|| "database_error".to_owned()),
        sqlx::Error::PoolTimedOut => "pool_timeout".to_owned(),
        sqlx::Error::PoolClosed => "pool_closed".to_owned(),
        sqlx::Error::Io(_) => "io_error".to_owned(),
        sqlx::Error::RowNotFound => "row_not_found".to_owned(),
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => "decode_error".to_owned(),
        sqlx::Error::Protocol(_) => "protocol_error".to_owned(),
        _ => "_OTHER".to_owned(),
    }
}

/// `server.address` and `server.port` of a PostgreSQL URL
/// (`postgres://user:pass@host:port/db?…`); the port defaults to 5432.
///
/// A multi-host URL (`postgres://h1:5432,h2:5433/db`) names its first host. A URL without a
/// host (`postgres:///db`, a Unix socket) gives no address; IPv6 hosts are written `[::1]`.
pub fn postgres_server(url: &str) -> DbServer {
    let rest = url.split_once("://").map_or("", |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    // The first host of a multi-host URL is the one we name.
    let host_port = host_port.split(',').next().unwrap_or("");
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        // [::1]:5432
        match v6.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':')),
            None => (v6, None),
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    DbServer {
        address: (!host.is_empty()).then(|| host.to_owned()),
        port: Some(port.and_then(|p| p.parse().ok()).unwrap_or(5432)),
    }
}

/// The URL with any password replaced by `***` (`postgres://app:***@db/shop`), safe for logs
/// and error messages. A URL without a password is returned as it is.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_postgres_server_address_and_port_come_from_the_url() {
        for (url, address, port) in [
            (
                "postgres://app:pw@db.internal:6543/shop?sslmode=disable",
                Some("db.internal"),
                6543,
            ),
            (
                "postgresql://postgres@127.0.0.1/test",
                Some("127.0.0.1"),
                5432,
            ),
            ("postgres://[::1]:5433/x", Some("::1"), 5433),
            // A multi-host URL names its first host.
            (
                "postgres://u@primary:5433,replica:5434/db",
                Some("primary"),
                5433,
            ),
            // No host (a Unix socket): no address.
            ("postgres:///db", None, 5432),
            ("postgres://u@:6000/db", None, 6000),
        ] {
            let s = postgres_server(url);
            assert_eq!(s.address.as_deref(), address, "{url}");
            assert_eq!(s.port, Some(port), "{url}");
        }
    }

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/shop"),
            "postgres://app:***@db:5432/shop"
        );
        assert_eq!(
            redact("postgres://app:s3cret@db?sslmode=disable"),
            "postgres://app:***@db?sslmode=disable"
        );
        assert_eq!(redact("postgres://app@db/shop"), "postgres://app@db/shop");
        assert_eq!(
            redact("sqlite://.faultline/fulfillment.db"),
            "sqlite://.faultline/fulfillment.db"
        );
        assert_eq!(redact("sqlite:a@b.db"), "sqlite:a@b.db");
    }

    #[tokio::test]
    async fn database_errors_carry_the_database_code() {
        use sqlx::ConnectOptions;
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .in_memory(true)
            .connect()
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut conn)
            .await
            .unwrap();
        let err = sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut conn)
            .await
            .unwrap_err();
        // SQLITE_CONSTRAINT_PRIMARYKEY
        assert_eq!(sqlx_error_type(&err), "1555");
        assert_eq!(sqlx_error_type(&sqlx::Error::PoolTimedOut), "pool_timeout");
    }
}
