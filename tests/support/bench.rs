//! What the benchmark programs (tests/bench/) share.

/// A numeric knob from the environment, or its default.
pub fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The median (the upper one of an even count); sorts `values`.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// Runs a benchmark on a multi-threaded runtime with a worker per core.
pub fn run_on_all_cores<F: std::future::Future>(benchmark: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(benchmark)
}
