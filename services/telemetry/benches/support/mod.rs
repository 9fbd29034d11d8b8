//! Helpers shared by the telemetry benches: settings from the environment and CPU time read
//! from `/proc` (of this process, of PostgreSQL's backends).
#![allow(clippy::unwrap_used, clippy::indexing_slicing, dead_code)]

use std::collections::HashMap;

use sea_orm::sqlx;

/// The variable `name` parsed, or `default` when unset or unreadable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Clock ticks (user + system, 10 ms) of a process.
pub fn ticks(pid: &str) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0)
}

/// Ticks of every PostgreSQL backend of the pool's database, by pid.
pub async fn backend_ticks(pool: &sqlx::PgPool) -> HashMap<i32, u64> {
    let pids: Vec<(i32,)> = sqlx::query_as("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        .fetch_all(pool)
        .await
        .unwrap();
    pids.into_iter().map(|(p,)| (p, ticks(&p.to_string()))).collect()
}

/// Ticks PostgreSQL's backends of the pool's database have used since `before` (a
/// [`backend_ticks`] reading; backends started since count from zero).
pub async fn backend_ticks_since(pool: &sqlx::PgPool, before: &HashMap<i32, u64>) -> u64 {
    backend_ticks(pool)
        .await
        .iter()
        .map(|(pid, t)| t.saturating_sub(before.get(pid).copied().unwrap_or(0)))
        .sum()
}
