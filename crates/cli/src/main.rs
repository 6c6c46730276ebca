//! `cityward`: the one binary of the platform. Argument parsing and wiring only; the work
//! is done by the library crates.

mod demo;
mod ingest;
mod offline;
mod replay;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

// The node allocates and frees many small objects per event (decoding, enrichment, rule
// state, alerts); mimalloc does that markedly faster than the system allocator.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// cityward — the data platform of a city's public-safety and operations centre.
#[derive(Parser)]
#[command(name = "cityward", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a demo city and run a node with simulated events streaming in.
    Demo {
        /// Data directory (default: a new temporary directory).
        #[arg(long)]
        data: Option<PathBuf>,
        /// HTTP listen address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// City size: small, medium or large.
        #[arg(long, default_value = "medium")]
        size: String,
        /// Seed of the generated city and its events.
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Run a node from a configuration file.
    Serve {
        /// The configuration file (`cityward config default` prints a starting point).
        #[arg(long)]
        config: PathBuf,
    },
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// City model helpers.
    City {
        #[command(subcommand)]
        command: CityCommand,
    },
    /// Write simulated events of a city to an NDJSON file.
    Simulate {
        /// City model directory.
        #[arg(long)]
        city: PathBuf,
        /// How much event time to simulate, e.g. 1h or 30m.
        #[arg(long)]
        duration: String,
        /// Output NDJSON file.
        #[arg(long)]
        out: PathBuf,
        /// Seed of the simulation.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Start time (RFC 3339); default: now minus the duration.
        #[arg(long)]
        start: Option<String>,
    },
    /// Bulk-load NDJSON or CSV files into a running node.
    Ingest {
        /// Files to load (`.csv` is read as CSV, anything else as NDJSON; `.gz` is sent as is).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The node's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        to: String,
        /// Bearer token (or set CITYWARD_TOKEN); log in with --user/--password instead.
        #[arg(long, env = "CITYWARD_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// User to log in as when no token is given.
        #[arg(long)]
        user: Option<String>,
        /// Password for --user (or set CITYWARD_PASSWORD).
        #[arg(long, env = "CITYWARD_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// Records per request.
        #[arg(long, default_value_t = 5000)]
        batch: usize,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Do not draw a progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Run a read-only SQL query over a node's event lake and WAL.
    Sql {
        /// The node's data directory.
        #[arg(long, default_value = "./cityward-data")]
        data: PathBuf,
        /// The query, e.g. "SELECT kind, count(*) FROM events GROUP BY kind".
        query: String,
        /// Largest number of rows to print.
        #[arg(long, default_value_t = 1000)]
        max_rows: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run rules over an event file, offline and deterministically; write the alerts.
    Replay {
        /// City model directory (zones, roads, grids and devices the rules use).
        #[arg(long)]
        city: Option<PathBuf>,
        /// Rule file (YAML).
        #[arg(long)]
        rules: PathBuf,
        /// Events (NDJSON, optionally gzip).
        #[arg(long)]
        events: PathBuf,
        /// Output: one alert per line (NDJSON), in a fixed order.
        #[arg(long)]
        out: PathBuf,
        /// Hotlists for hotlist rules (JSON: {"LIST": [{"value", "reason", "owner", "added", "expires"}, …]}).
        #[arg(long)]
        hotlists: Option<PathBuf>,
        /// Lateness allowance: events this far behind the newest still count in order.
        #[arg(long, default_value = "5s")]
        lateness: String,
        /// Engine threads (rules are split among them; the output does not change).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// After the last event, let event time run on this long so pending timers
        /// (absence, dwell, "not followed") fire.
        #[arg(long, default_value = "0s")]
        horizon: String,
        /// Do not draw a progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Rule files: check them, and see what they would raise on past events.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// What retention would delete next, and what it deleted.
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
    },
    /// Users of a node (`serve` creates none).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// The tamper-evident audit log: verify its chain, export its head.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The dead-letter store: records that were refused, with the reason.
    Deadletter {
        #[command(subcommand)]
        command: DeadletterCommand,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Check a rule file (against a city, when given): errors name the file, line and key.
    Check {
        /// Rule file (YAML).
        file: PathBuf,
        /// City model directory.
        #[arg(long)]
        city: Option<PathBuf>,
    },
    /// How many alerts each rule would have raised on an event file.
    Test {
        /// Rule file (YAML).
        file: PathBuf,
        /// Events (NDJSON, optionally gzip).
        #[arg(long)]
        events: PathBuf,
        /// City model directory.
        #[arg(long)]
        city: Option<PathBuf>,
        /// Hotlists for hotlist rules (JSON).
        #[arg(long)]
        hotlists: Option<PathBuf>,
        /// Lateness allowance.
        #[arg(long, default_value = "5s")]
        lateness: String,
        /// Engine threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the fully commented default configuration.
    Default,
    /// Check a configuration file and print it with every default filled in.
    Check {
        /// The configuration file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum CityCommand {
    /// Generate a synthetic city model (regions, grids, zones, roads, units, devices).
    Generate {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Seed; the same seed gives the same city.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// small, medium or large (large: 20,000+ devices, 2,000+ grids).
        #[arg(long, default_value = "medium")]
        size: String,
    },
}

#[derive(Subcommand)]
enum RetentionCommand {
    /// List the lake partitions the next retention run would delete.
    Plan {
        /// The node's data directory.
        #[arg(long, default_value = "./cityward-data")]
        data: PathBuf,
        /// The node's configuration (for `[lake.retention]`); default: the built-in retention.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// List past deletions (from the lake's retention log).
    Report {
        /// The node's data directory.
        #[arg(long, default_value = "./cityward-data")]
        data: PathBuf,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user to a node's state database.
    Add {
        /// The node's data directory.
        #[arg(long, default_value = "./cityward-data")]
        data: PathBuf,
        /// The node's configuration file: the user goes to the state store it names
        /// (`[state]`, e.g. PostgreSQL) instead of the data directory's.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Login name.
        #[arg(long)]
        username: String,
        /// admin, analyst, dispatcher, responder, auditor, ingest or reader.
        #[arg(long)]
        role: String,
        /// Password (or set CITYWARD_PASSWORD).
        #[arg(long, env = "CITYWARD_PASSWORD", hide_env_values = true)]
        password: String,
        /// Unit the user acts for; its region is their jurisdiction (required for
        /// dispatchers and responders).
        #[arg(long)]
        unit: Option<String>,
        /// The user approves searches beyond their role's limits.
        #[arg(long)]
        supervisor: bool,
    },
    /// Make a user a supervisor (who approves searches beyond a role's limits), or not.
    Supervisor {
        /// The node's data directory.
        #[arg(long, default_value = "./cityward-data")]
        data: PathBuf,
        /// Login name.
        username: String,
        /// Take the flag away instead.
        #[arg(long)]
        off: bool,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the audit log's hash chain: every entry unchanged, none removed or reordered.
    /// Exits with status 1 when it does not hold.
    Verify {
        /// The node's data directory.
        #[arg(long, default_value = "./cityward-data")]
        data: PathBuf,
        /// A head exported earlier with `cityward audit head` (a file): also finds entries
        /// cut from the end of the log.
        #[arg(long)]
        anchor: Option<PathBuf>,
    },
    /// Print the chain head (position, hash, time) as JSON, to anchor it elsewhere.
    Head {
        /// The node's data directory.
        #[arg(long, default_value = "./cityward-data")]
        data: PathBuf,
    },
}

#[derive(Subcommand)]
enum DeadletterCommand {
    /// List refused records, newest first.
    List {
        /// The node's data directory.
        #[arg(long, default_value = "./cityward-data")]
        data: PathBuf,
        /// How many to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Only http, mqtt or file.
        #[arg(long)]
        channel: Option<String>,
        /// Only those not yet re-submitted.
        #[arg(long)]
        pending: bool,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Re-submit a refused record to a running node, corrected from a file or as stored.
    Resubmit {
        /// Dead-letter id.
        id: i64,
        /// File holding the corrected record (one JSON object); omit to send it as stored.
        #[arg(long)]
        file: Option<PathBuf>,
        /// The node's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        to: String,
        /// Bearer token (or set CITYWARD_TOKEN).
        #[arg(long, env = "CITYWARD_TOKEN", hide_env_values = true)]
        token: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CITYWARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn duration_arg(flag: &str, text: &str) -> anyhow::Result<Duration> {
    cityward_model::parse_duration(text).map_err(|e| anyhow::anyhow!("{flag}: {e}"))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Demo {
            data,
            listen,
            size,
            seed,
        } => {
            let size = size.parse().map_err(|e| anyhow::anyhow!("--size: {e}"))?;
            runtime()?.block_on(demo::run(data, &listen, size, seed))?;
        }
        Command::Replay {
            city,
            rules,
            events,
            out,
            hotlists,
            lateness,
            threads,
            horizon,
            quiet,
        } => {
            let options = replay::RunOptions {
                lateness: duration_arg("--lateness", &lateness)?,
                threads,
                horizon: duration_arg("--horizon", &horizon)?,
                progress: !quiet,
            };
            replay::replay(city.as_deref(), &rules, &events, &out, hotlists.as_deref(), options)?;
        }
        Command::Rules {
            command: RulesCommand::Check { file, city },
        } => replay::rules_check(city.as_deref(), &file)?,
        Command::Rules {
            command:
                RulesCommand::Test {
                    file,
                    events,
                    city,
                    hotlists,
                    lateness,
                    threads,
                },
        } => {
            let options = replay::RunOptions {
                lateness: duration_arg("--lateness", &lateness)?,
                threads,
                horizon: Duration::ZERO,
                progress: false,
            };
            replay::rules_test(city.as_deref(), &file, &events, hotlists.as_deref(), options)?;
        }
        Command::Serve { config } => {
            let config = cityward_server::NodeConfig::load(&config)?;
            runtime()?.block_on(cityward_server::serve(config))?;
        }
        Command::Config {
            command: ConfigCommand::Default,
        } => print!("{}", cityward_server::DEFAULT_CONFIG_TOML),
        Command::Config {
            command: ConfigCommand::Check { file },
        } => {
            let config = cityward_server::NodeConfig::load(&file)?;
            print!(
                "{}",
                toml::to_string(&config).context("cannot print the configuration")?
            );
        }
        Command::City {
            command: CityCommand::Generate { out, seed, size },
        } => {
            let size = size.parse().map_err(|e| anyhow::anyhow!("--size: {e}"))?;
            let city = cityward_sim::generate_city(seed, size);
            city.write(&out)
                .with_context(|| format!("cannot write the city to {}", out.display()))?;
            println!(
                "Wrote city to {}: {} regions, {} grids, {} zones, {} roads, {} units, {} devices.",
                out.display(),
                city.regions.len(),
                city.grids.len(),
                city.zones.len(),
                city.roads.len(),
                city.units.len(),
                city.devices.len()
            );
        }
        Command::Simulate {
            city,
            duration,
            out,
            seed,
            start,
        } => offline::simulate(&city, &duration, &out, seed, start.as_deref())?,
        Command::Ingest {
            files,
            to,
            token,
            user,
            password,
            batch,
            concurrency,
            quiet,
        } => {
            let token = match (token, user) {
                (Some(t), _) => Some(t),
                (None, Some(user)) => {
                    let password =
                        password.context("--user needs --password or CITYWARD_PASSWORD")?;
                    Some(ingest::login(&to, &user, &password)?)
                }
                (None, None) => None,
            };
            let summary = ingest::run(
                &files,
                &to,
                token.as_deref(),
                batch.max(1),
                concurrency.max(1),
                quiet,
            )?;
            if summary.rejected > 0 {
                return Ok(ExitCode::from(2));
            }
        }
        Command::Sql {
            data,
            query,
            max_rows,
            json,
        } => runtime()?.block_on(offline::sql(&data, &query, max_rows, json))?,
        Command::Retention {
            command: RetentionCommand::Plan { data, config },
        } => {
            let config = match config {
                Some(path) => cityward_server::NodeConfig::load(&path)?,
                None => cityward_server::NodeConfig::default(),
            };
            offline::retention_plan(&data, &config)?
        }
        Command::Retention {
            command: RetentionCommand::Report { data },
        } => offline::retention_report(&data)?,
        Command::User {
            command:
                UserCommand::Add {
                    data,
                    config,
                    username,
                    role,
                    password,
                    unit,
                    supervisor,
                },
        } => {
            let role = cityward_server::Role::parse(&role)
                .with_context(|| format!("--role `{role}` is not one of admin, analyst, dispatcher, responder, auditor, ingest, reader"))?;
            let (state, data) = match config {
                Some(path) => {
                    let config = cityward_server::NodeConfig::load(&path)?;
                    let data = config.node.data_dir.clone();
                    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
                    (config.state.open(&data)?, data)
                }
                None => {
                    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
                    let state: std::sync::Arc<dyn cityward_store::StateStore> = std::sync::Arc::new(cityward_store::SqliteState::open(data.join("state.sqlite3"))?);
                    (state, data)
                }
            };
            cityward_server::create_user(state.as_ref(), &username, &password, role, unit.as_deref())?;
            if supervisor {
                state.set_supervisor(&username, true)?;
            }
            println!(
                "User `{username}` ({}{}) added to {}.",
                role.as_str(),
                if supervisor { ", supervisor" } else { "" },
                data.display()
            );
        }
        Command::User {
            command: UserCommand::Supervisor { data, username, off },
        } => {
            let state = offline::open_state(&data)?;
            cityward_store::StateStore::set_supervisor(&state, &username, !off)?;
            println!("User `{username}` is {} a supervisor.", if off { "no longer" } else { "now" });
        }
        Command::Audit {
            command: AuditCommand::Verify { data, anchor },
        } => {
            if !offline::audit_verify(&data, anchor.as_deref())? {
                std::process::exit(1);
            }
        }
        Command::Audit {
            command: AuditCommand::Head { data },
        } => offline::audit_head(&data)?,
        Command::Deadletter {
            command:
                DeadletterCommand::List {
                    data,
                    limit,
                    channel,
                    pending,
                    json,
                },
        } => offline::deadletter_list(&data, limit, channel, pending, json)?,
        Command::Deadletter {
            command:
                DeadletterCommand::Resubmit {
                    id,
                    file,
                    to,
                    token,
                },
        } => ingest::resubmit(&to, &token, id, file.as_deref())?,
    }
    Ok(ExitCode::SUCCESS)
}
