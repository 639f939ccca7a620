//! A bounded load test of `camstream serve` from a second process on loopback: N
//! `:explain` requests of one picture at concurrency C. Prints latency percentiles,
//! throughput and every status seen as one JSON line. scripts/serve-load.sh starts the
//! server, reads its memory before and after, and runs this.
//!
//!     cargo run --release --example serve_load -- URL MODEL PICTURE [N] [C]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: serve_load URL MODEL PICTURE [N=200] [C=16]");
        std::process::exit(2);
    }
    let (url, model, picture) = (&args[1], &args[2], &args[3]);
    let n: usize = args.get(4).and_then(|v| v.parse().ok()).unwrap_or(200);
    let c: usize = args.get(5).and_then(|v| v.parse().ok()).unwrap_or(16);
    let bytes = std::fs::read(picture).unwrap_or_else(|e| {
        eprintln!("serve_load: {picture}: {e}");
        std::process::exit(2);
    });
    let body = Arc::new(serde_json::json!({
        "instances": [{ "b64": base64::engine::general_purpose::STANDARD.encode(bytes) }]
    }));
    let endpoint = Arc::new(format!("{url}/v1/models/{model}:explain"));
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..c)
        .map(|_| {
            let (client, endpoint, body, next) =
                (client.clone(), endpoint.clone(), body.clone(), next.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let t = Instant::now();
                    let status = match client.post(endpoint.as_str()).json(&*body).send().await {
                        Ok(r) => {
                            let s = r.status().as_u16();
                            let _ = r.bytes().await;
                            s
                        }
                        Err(_) => 0,
                    };
                    seen.push((status, t.elapsed().as_secs_f64() * 1e3));
                }
                seen
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n);
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    let wall = started.elapsed().as_secs_f64();
    let mut ms: Vec<f64> = all.iter().filter(|r| r.0 == 200).map(|r| r.1).collect();
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        ms.get(((ms.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
    };
    let mut statuses = std::collections::BTreeMap::new();
    for r in &all {
        *statuses.entry(r.0.to_string()).or_insert(0u64) += 1;
    }
    let bad = all
        .iter()
        .filter(|r| r.0 == 0 || (r.0 >= 500 && r.0 != 503))
        .count();
    println!(
        "{}",
        serde_json::json!({
            "requests": all.len(),
            "concurrency": c,
            "statuses": statuses,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "wall_s": wall,
            "requests_per_s": all.len() as f64 / wall,
            "errors_other_than_503": bad,
        })
    );
    if bad > 0 {
        std::process::exit(1);
    }
}
