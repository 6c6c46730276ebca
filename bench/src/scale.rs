//! `scale-bench`: intake and detection of one node shared by 1, 2 and 4 processes
//! (`[scale]`), beside one ordinary process, all on the same PostgreSQL and load.
//!
//! 1. Generates the large demo city and 10,000 rules keyed by source (a threshold per
//!    sensor, a speed limit per truck, geofences, an absence rule, a marker rule); the
//!    counts and sequences grouped by grid of `node-bench` are left out, since the
//!    processes split the stream by source.
//! 2. For each setup: a fresh nats-server (JetStream on) and PostgreSQL schema; the
//!    processes started and, when shared, the partitions spread over them.
//! 3. `--seconds` of node-bench's mixed events (truck GPS, sensor readings, heartbeats)
//!    from `--clients` clients, each posting to one process in turn, as fast as the
//!    processes acknowledge them (durably, in their WAL).
//! 4. Then waits until detection has applied every acknowledged event (the sum of
//!    `stats.events` over the processes): end-to-end throughput is the events over the time
//!    from the first post to the last event detected.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Parser;
use cityward_bench::workload::{agent, post_mixed_until, read_devices, run, start_node, write_rules};
use cityward_tier::testkit::NatsServer;
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    /// Path of the `cityward` binary to measure.
    #[arg(long, default_value = "target/release/cityward")]
    cityward: PathBuf,
    /// Work directory.
    #[arg(long, default_value = "/tmp/cityward-scale-bench")]
    dir: PathBuf,
    /// PostgreSQL shared by the processes.
    #[arg(long, default_value = "postgresql://postgres@127.0.0.1:5432/test")]
    postgres: String,
    /// Rules in total.
    #[arg(long, default_value_t = 10_000)]
    rules: usize,
    /// Seconds of load per setup.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Client threads.
    #[arg(long, default_value_t = 6)]
    clients: usize,
    /// Events per request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Shared setups to measure: numbers of processes.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    processes: Vec<usize>,
    /// Partitions of the event stream.
    #[arg(long, default_value_t = 16)]
    partitions: u32,
}

struct Proc {
    child: Child,
    base: String,
    token: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn detect(&self) -> Result<Value> {
        let mut r = agent().get(&format!("{}/api/v1/detect/status", self.base)).header("Authorization", &format!("Bearer {}", self.token)).call()?;
        Ok(serde_json::from_str(&r.body_mut().read_to_string()?)?)
    }

    fn cpu_secs(&self) -> f64 {
        cpu_secs(self.child.id())
    }

    fn detect_cpu_secs(&self) -> f64 {
        detect_cpu_secs(self.child.id())
    }

    fn rss_mib(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
            .unwrap_or(0.0)
            / 1024.0
    }
}

/// CPU time (user + system) a process has used, from `/proc/PID/stat`, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    stat_cpu_secs(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
}

/// CPU time of a process's detection threads (`cityward-detect…`), in seconds.
fn detect_cpu_secs(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0.0 };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter(|stat| stat.contains("(cityward-detect"))
        .map(|stat| stat_cpu_secs(&stat))
        .sum()
}

fn stat_cpu_secs(stat: &str) -> f64 {
    // Fields after the command name (which may hold spaces): utime and stime are the 12th
    // and 13th, in clock ticks of 1/100 s.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// One setup: `shared` processes sharing detection, or one ordinary process when 0.
fn measure(args: &Args, city: &Path, rules: &Path, sensors: &[(String, String)], shared: usize) -> Result<()> {
    let label = if shared == 0 { "one process, [scale] off".to_string() } else { format!("{shared} process(es), [scale] on") };
    let dir = args.dir.join(format!("setup-{shared}"));
    std::fs::create_dir_all(&dir)?;
    let nats = NatsServer::start(&format!("ward{shared}"), &dir, None);
    let schema = format!("cw_scale_bench_{shared}_{}", chrono::Utc::now().timestamp());
    let n = shared.max(1);
    let mut procs = Vec::new();
    for i in 0..n {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let scale = if shared > 0 {
            format!("[scale]\nenabled = true\nnats = \"{}\"\npartitions = {}\nmember = \"p{i}\"\n", nats.url(), args.partitions)
        } else {
            String::new()
        };
        let config = dir.join(format!("p{i}.toml"));
        std::fs::write(
            &config,
            format!(
                "[node]\nname = \"ward\"\ndata_dir = {:?}\nlisten = \"127.0.0.1:{port}\"\n[city]\ndir = {:?}\n[auth]\nopen_ingest = true\n\
                 [state]\nbackend = \"postgres\"\nurl = \"{}\"\nschema = \"{schema}\"\n[detect]\nrules = [{:?}]\n{scale}",
                dir.join(format!("p{i}")).display().to_string(),
                city.display().to_string(),
                args.postgres,
                rules.display().to_string()
            ),
        )?;
        if i == 0 {
            run(Command::new(&args.cityward).args(["user", "add", "--username", "bench", "--role", "admin", "--password", "bench-pass", "--config"]).arg(&config))?;
        }
        let child = start_node(&args.cityward, &config, port)?;
        let base = format!("http://127.0.0.1:{port}");
        let mut r = agent().post(&format!("{base}/api/v1/login")).header("Content-Type", "application/json").send(json!({"username": "bench", "password": "bench-pass"}).to_string().as_bytes())?;
        let login: Value = serde_json::from_str(&r.body_mut().read_to_string()?)?;
        let token = login["token"].as_str().unwrap_or_default().to_string();
        procs.push(Proc { child, base, token });
    }
    if shared > 0 {
        // Every process holds partitions before the load starts.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let held: Vec<usize> = procs.iter().map(|p| p.detect().map(|d| d["scale"]["held"].as_array().map_or(0, Vec::len)).unwrap_or(0)).collect();
            if held.iter().all(|h| *h > 0) && held.iter().sum::<usize>() == args.partitions as usize {
                println!("{label}: partitions held {held:?}");
                break;
            }
            if Instant::now() > deadline {
                bail!("partitions not spread over the processes: {held:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let rss_before: f64 = procs.iter().map(Proc::rss_mib).sum();
    let nats_pid = nats.pid().unwrap_or(0);
    let cpu_before = (procs.iter().map(Proc::cpu_secs).sum::<f64>(), cpu_secs(nats_pid), procs.iter().map(Proc::detect_cpu_secs).sum::<f64>());
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let urls: Vec<String> = procs.iter().map(|p| format!("{}/api/v1/events", p.base)).collect();
    let start = Instant::now();
    let clients: Vec<_> = (0..args.clients)
        .map(|c| {
            let (sent, stop, urls, sensors, batch) = (sent.clone(), stop.clone(), urls.clone(), sensors.to_vec(), args.batch);
            std::thread::spawn(move || post_mixed_until(c, &urls, batch, &sensors, &stop, &sent))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(args.seconds));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client thread")?;
    }
    let intake_secs = start.elapsed().as_secs_f64();
    let total = sent.load(Ordering::Relaxed);
    let mut peak_rss: f64 = procs.iter().map(Proc::rss_mib).sum();
    let deadline = Instant::now() + Duration::from_secs(600);
    let detected = loop {
        let detected: u64 = procs.iter().map(|p| p.detect().map(|d| d["stats"]["events"].as_u64().unwrap_or(0)).unwrap_or(0)).sum();
        peak_rss = peak_rss.max(procs.iter().map(Proc::rss_mib).sum());
        if detected >= total || Instant::now() > deadline {
            break detected;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let all_secs = start.elapsed().as_secs_f64();
    let cpu_nodes = procs.iter().map(Proc::cpu_secs).sum::<f64>() - cpu_before.0;
    let cpu_nats = cpu_secs(nats_pid) - cpu_before.1;
    let cpu_detect = procs.iter().map(Proc::detect_cpu_secs).sum::<f64>() - cpu_before.2;
    println!(
        "{label}: {total} events taken in over {intake_secs:.1} s = {:.0} events/s; all detected after {all_secs:.1} s = {:.0} events/s end to end ({detected} detected); \
         CPU per event: cityward {:.2} µs (its detection threads {:.2} µs), nats-server {:.2} µs; RSS {rss_before:.0} MiB loaded, {peak_rss:.0} MiB peak (all processes)",
        total as f64 / intake_secs,
        detected as f64 / all_secs,
        cpu_nodes * 1e6 / total.max(1) as f64,
        cpu_detect * 1e6 / total.max(1) as f64,
        cpu_nats * 1e6 / total.max(1) as f64,
    );
    drop(procs);
    let _ = Command::new("psql").args([args.postgres.as_str(), "-qc", &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")]).stderr(std::process::Stdio::null()).status();
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir)?;
    let city = args.dir.join("city");
    run(Command::new(&args.cityward).args(["city", "generate", "--size", "large", "--out"]).arg(&city))?;
    let devices = read_devices(&city)?;
    let rules = args.dir.join("rules.yaml");
    let written = write_rules(&rules, &devices, args.rules, false)?;
    println!("Wrote {written} rules keyed by source ({} sensors in the city); machine: {} cores.", devices.sensors.len(), std::thread::available_parallelism().map_or(0, |n| n.get()));
    measure(&args, &city, &rules, &devices.sensors, 0)?;
    for n in &args.processes {
        measure(&args, &city, &rules, &devices.sensors, *n)?;
    }
    Ok(())
}
