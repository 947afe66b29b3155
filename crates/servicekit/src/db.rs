//! The `error.type` of a sqlx error, for [`telemetry::db::instrument_with`].
//!
//! The [database conventions](https://opentelemetry.io/docs/specs/semconv/database/database-spans/)
//! ask for the database's own status code: a PostgreSQL SQLSTATE (`40001` serialization
//! failure, `40P01` deadlock, `23505` unique violation) or an SQLite result code (`5` busy,
//! `6` locked, `517` busy snapshot). Errors that never reached the database get a short class.

/// A low-cardinality `error.type` for `error`.
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

#[cfg(test)]
mod tests {
    use super::*;

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
