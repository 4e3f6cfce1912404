//! An OTLP/gRPC receiver for `scripts/bench-tracing`: counts the spans it is
//! sent (the test's receiver, `support/otlp.rs`, in counting mode). Listens
//! on `OTLP_SINK_LISTEN` (default 127.0.0.1:4317), prints `LISTEN <addr>`,
//! and every second `SPANS <total>`, until killed.

#[tokio::main]
async fn main() {
    let listen = std::env::var("OTLP_SINK_LISTEN").unwrap_or_else(|_| "127.0.0.1:4317".into());
    let receiver = orgadmin_tests::otlp::OtlpReceiver::start_counting(&listen).await;
    println!("LISTEN\t{}", receiver.endpoint);
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        println!("SPANS\t{}", receiver.span_count());
    }
}
