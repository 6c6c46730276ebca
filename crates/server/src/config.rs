//! The node's configuration file (`cityward.toml`). Every setting has a default; the
//! commented file printed by `cityward config default` is [`DEFAULT_CONFIG_TOML`], and a
//! test keeps it equal to [`NodeConfig::default`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cityward_ingest::{IngestConfig, MqttConfig};
use cityward_model::{KindRegistry, KindSchema};
use serde::{Deserialize, Serialize};

/// The whole configuration of one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Identity, role and addresses of this node.
    pub node: NodeSection,
    /// Where the city model comes from.
    pub city: CitySection,
    /// Record acceptance rules (all channels).
    pub ingest: IngestConfig,
    /// The MQTT subscriber.
    pub mqtt: MqttConfig,
    /// Where the node's shared state (alerts, rules, users, audit…) is kept.
    pub state: StateSection,
    /// The write-ahead log.
    pub wal: WalSection,
    /// The Parquet event lake and its retention.
    pub lake: LakeSection,
    /// Duplicate-id detection.
    pub dedup: DedupSection,
    /// Users, tokens and who may call what.
    pub auth: AuthSection,
    /// The rule engine.
    pub detect: DetectSection,
    /// What happens to alerts once raised: dispositions, deadlines, boundaries.
    pub alerts: cityward_alerts::AlertsConfig,
    /// Responder positions and recommendations of whom to send.
    pub dispatch: cityward_alerts::DispatchConfig,
    /// The service types residents and call-takers report through Open311 GeoReport v2.
    pub open311: Open311Config,
    /// Who may search personal data, why, and how far.
    pub search: crate::purpose::SearchSection,
    /// Links to the tiers above and below over NATS JetStream.
    pub tier: TierSection,
    /// Several processes sharing this node's intake and detection.
    pub scale: ScaleSection,
    /// Kinds the city adds to (or overrides among) the built-in ones.
    pub kinds: BTreeMap<String, KindSchema>,
}

/// `[node]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// Name of this node in logs, metrics and between tiers (the JetStream domain of its
    /// NATS server when `[tier]` is enabled).
    pub name: String,
    /// Tier of this node: `community`, `street` or `city`.
    pub role: String,
    /// Directory for the WAL, the lake and the state database.
    pub data_dir: PathBuf,
    /// Address of the HTTP listener (API, metrics, console).
    pub listen: SocketAddr,
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            name: "cityward".into(),
            role: "city".into(),
            data_dir: PathBuf::from("./cityward-data"),
            listen: "127.0.0.1:8080".parse().expect("valid address"),
        }
    }
}

/// `[city]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CitySection {
    /// A city model directory (from `cityward city generate` or the city's GIS export) to
    /// import at start-up. Unset: use the city already in the state database, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// A MapLibre style URL drawn under the city's own layers in the console, where the
    /// deployment has a map server. Unset: the city's layers alone (nothing from the internet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basemap_style: Option<String>,
    /// Or a raster tile URL with `{z}`, `{x}` and `{y}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basemap_xyz: Option<String>,
    /// The basemap's attribution, shown on the map.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basemap_attribution: Option<String>,
}

/// `[wal]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalSection {
    /// Segment size at which the log rolls to a new file, in bytes. A sealed segment is
    /// compacted into Parquet in one piece, so this also bounds the compactor's memory.
    pub segment_bytes: u64,
    /// Bytes of appends waiting for the writer before new ones are held back (back-pressure).
    pub queue_bytes: u64,
    /// WAL bytes on disk (not yet compacted into the lake) beyond which intake answers
    /// 503 "retry later" instead of growing the backlog until the disk is full.
    pub max_backlog_bytes: u64,
}

impl Default for WalSection {
    fn default() -> Self {
        WalSection {
            segment_bytes: 32 * 1024 * 1024,
            queue_bytes: 32 * 1024 * 1024,
            max_backlog_bytes: 4 * 1024 * 1024 * 1024,
        }
    }
}

/// `[lake]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LakeSection {
    /// Sealed WAL segments are compacted as soon as they fill; the active segment is sealed
    /// and compacted at least this often.
    #[serde(with = "cityward_model::duration_serde")]
    pub compact_every: Duration,
    /// How often small Parquet files of a partition are merged into larger ones.
    #[serde(with = "cityward_model::duration_serde")]
    pub merge_every: Duration,
    /// How often expired partitions are looked for.
    #[serde(with = "cityward_model::duration_serde")]
    pub retention_every: Duration,
    /// Retention per data class (`class` of a kind, e.g. `plate_read`) or per kind name;
    /// a kind's own entry wins over its class. Unlisted data is kept.
    #[serde(with = "duration_map")]
    pub retention: BTreeMap<String, Duration>,
    /// How long events that are evidence of an alert (a plate read that matched a hotlist,
    /// a rule's trigger) are kept, per data class or kind, when longer than `retention`.
    #[serde(with = "duration_map")]
    pub retention_evidence: BTreeMap<String, Duration>,
    /// Retention in a jurisdiction: `[lake.retention_regions.ID]` per data class or kind,
    /// for events in the grids of region ID and the regions inside it. The innermost region
    /// with an entry wins over `retention`.
    pub retention_regions: BTreeMap<String, cityward_store::RegionRetention>,
    /// Alerts in a final status (closed, resolved, suppressed) are deleted from the state
    /// store this long after their last change.
    #[serde(with = "cityward_model::duration_serde")]
    pub alert_retention: Duration,
    /// Audit entries are deleted this long after they were written; the log's new start is
    /// recorded so that `cityward audit verify` still checks the rest.
    #[serde(with = "cityward_model::duration_serde")]
    pub audit_retention: Duration,
    /// Memory for the Parquet footers and page indexes of lake files, kept between
    /// queries (about 0.75 MB per million events in the lake); beyond it, searches read
    /// them again and slow down.
    pub metadata_cache_bytes: u64,
}

impl Default for LakeSection {
    fn default() -> Self {
        let retention = [
            ("plate_read", 30 * 86_400),
            ("vehicle_gps", 180 * 86_400),
            ("sensor", 2 * 365 * 86_400),
            ("device_health", 90 * 86_400),
        ]
        .into_iter()
        .map(|(k, s)| (k.to_string(), Duration::from_secs(s)))
        .collect();
        LakeSection {
            compact_every: Duration::from_secs(60),
            merge_every: Duration::from_secs(600),
            retention_every: Duration::from_secs(3600),
            retention,
            retention_evidence: [("plate_read".to_string(), Duration::from_secs(365 * 86_400))].into(),
            retention_regions: BTreeMap::new(),
            alert_retention: Duration::from_secs(1826 * 86_400),
            audit_retention: Duration::from_secs(1826 * 86_400),
            metadata_cache_bytes: 256 << 20,
        }
    }
}

/// `[dedup]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupSection {
    /// How many recent event ids are remembered to refuse repeats (16 bytes each).
    pub capacity: usize,
    /// On start-up, ids of events this recent are reloaded from the lake.
    #[serde(with = "cityward_model::duration_serde")]
    pub reload_window: Duration,
}

impl Default for DedupSection {
    fn default() -> Self {
        DedupSection {
            capacity: 10_000_000,
            reload_window: Duration::from_secs(86_400),
        }
    }
}

/// `[detect]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectSection {
    /// Run the rule engine on this node.
    pub enabled: bool,
    /// Rule files (YAML, `rules: [...]`) loaded at start-up; their rules are stored with the
    /// node and can then be changed through the API.
    pub rules: Vec<PathBuf>,
    /// How late (in event time) an event may arrive and still count for windowed and timed
    /// rules; later ones are counted and reported as late.
    #[serde(with = "cityward_model::duration_serde")]
    pub lateness: Duration,
    /// How often the engine's state is saved with its WAL position. A restart re-applies the
    /// WAL written since; taking the state pauses detection briefly (about 0.5 s per million
    /// keys), writing it does not.
    #[serde(with = "cityward_model::duration_serde")]
    pub checkpoint_every: Duration,
    /// Evidence event ids kept per alert.
    pub max_evidence: usize,
    /// `wall`: when no events arrive for twice the lateness, event time follows the clock,
    /// so absence and dwell rules fire during silence (a live node). `event`: time moves
    /// only with event times (a node loading history, whose later events would otherwise
    /// count as late after a pause).
    pub clock: String,
}

impl Default for DetectSection {
    fn default() -> Self {
        DetectSection {
            enabled: true,
            rules: Vec::new(),
            lateness: Duration::from_secs(5),
            checkpoint_every: Duration::from_secs(30),
            max_evidence: 20,
            clock: "wall".into(),
        }
    }
}

/// `[state]`: the state store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateSection {
    /// `sqlite` (a file in the data directory; the embedded default) or `postgres`
    /// (shared by every process of a tier that names the same `url` and `schema`).
    pub backend: String,
    /// PostgreSQL's address, `postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE`.
    pub url: String,
    /// The PostgreSQL schema the node's tables live in (created when missing).
    pub schema: String,
}

impl Default for StateSection {
    fn default() -> Self {
        StateSection { backend: "sqlite".into(), url: "postgresql://postgres@127.0.0.1:5432/cityward".into(), schema: "cityward".into() }
    }
}

impl StateSection {
    /// Opens the store this section names (SQLite under `data_dir`).
    pub fn open(&self, data_dir: &Path) -> Result<std::sync::Arc<dyn cityward_store::StateStore>, cityward_store::StateError> {
        Ok(match self.backend.as_str() {
            "postgres" => std::sync::Arc::new(cityward_store::PgState::connect(&self.url, &self.schema, Default::default())?),
            _ => std::sync::Arc::new(cityward_store::SqliteState::open(data_dir.join("state.sqlite3"))?),
        })
    }
}

/// `[tier]`: this node's links to the tier above and the tiers below.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TierSection {
    /// Link this node to other tiers. Off, the node works alone (the embedded default).
    pub enabled: bool,
    /// This node's own NATS server: JetStream on, its JetStream domain = `node.name`, a
    /// leaf node of the server of the tier above (see docs/DEPLOYMENT.md).
    pub nats: String,
    /// The node of the tier above (its `node.name`, the JetStream domain of its server);
    /// empty at the top.
    pub parent: String,
    /// The region this node serves (shown in its status; a region the city lacks is
    /// refused at start-up).
    pub region: String,
    /// The most bytes kept for the tier above while it is unreachable (about 600 bytes
    /// per alert change); beyond it changes are not kept for it, and counted.
    pub outbox_max_bytes: u64,
    /// How long what this node publishes for the tiers below is kept for a node that is
    /// cut off.
    #[serde(with = "cityward_model::duration_serde")]
    pub downlink_keep: Duration,
    /// A minute of events is summarised for the tier above (counts per grid and kind) once
    /// it is this far in the past; events arriving later are not in the summary.
    #[serde(with = "cityward_model::duration_serde")]
    pub summary_lateness: Duration,
}

impl Default for TierSection {
    fn default() -> Self {
        TierSection {
            enabled: false,
            nats: "nats://127.0.0.1:4222".into(),
            parent: String::new(),
            region: String::new(),
            outbox_max_bytes: 10 << 30,
            downlink_keep: Duration::from_secs(30 * 86_400),
            summary_lateness: Duration::from_secs(120),
        }
    }
}

/// `[scale]`: intake and detection shared by several processes of one node through a
/// JetStream stream partitioned by key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScaleSection {
    /// Share intake and detection with the node's other processes.
    pub enabled: bool,
    /// The NATS server (JetStream on) every process of the node uses.
    pub nats: String,
    /// What decides an event's partition: `source` or `grid`.
    pub key: String,
    /// Partitions of the event stream; the same in every process of the node.
    pub partitions: u32,
    /// This process's id in the group; empty: made once and kept in `data_dir/scale/member`.
    pub member: String,
    /// A process that stops renewing its partitions loses them after this long.
    #[serde(with = "cityward_model::duration_serde")]
    pub lease: Duration,
    /// How long the event stream keeps events.
    #[serde(with = "cityward_model::duration_serde")]
    pub keep: Duration,
    /// The most bytes the event stream keeps; 0: no limit but `keep` and the server's.
    pub max_bytes: u64,
}

impl Default for ScaleSection {
    fn default() -> Self {
        ScaleSection {
            enabled: false,
            nats: "nats://127.0.0.1:4222".into(),
            key: "source".into(),
            partitions: 16,
            member: String::new(),
            lease: Duration::from_secs(10),
            keep: Duration::from_secs(86_400),
            max_bytes: 0,
        }
    }
}

/// `[auth]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Lifetime of a login token.
    #[serde(with = "cityward_model::duration_serde")]
    pub token_ttl: Duration,
    /// Accept `POST /api/v1/events` without a token (only for a closed network or a demo).
    pub open_ingest: bool,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            token_ttl: Duration::from_secs(12 * 3600),
            open_ingest: false,
        }
    }
}

/// `[open311]`: what residents and call-takers may report through Open311 GeoReport v2
/// (`/open311/v2/…`). A request becomes an alert of its service's category and severity,
/// routed like any other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Open311Config {
    /// The service types offered (`GET /open311/v2/services.json`); none: requests are refused.
    pub services: Vec<Open311Service>,
}

/// `[[open311.services]]`: one service type of Open311 GeoReport v2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Open311Service {
    /// The `service_code` clients send: letters, digits, `.`, `_` and `-`, unique.
    pub code: String,
    /// The name residents see (`service_name`); also the title of the alert.
    pub name: String,
    /// What to report under it, in a sentence or two.
    pub description: String,
    /// The group it is listed under (e.g. `fire safety`, `streets`).
    pub group: String,
    /// Words residents might search for (listed comma-separated, so without commas).
    #[serde(default)]
    pub keywords: Vec<String>,
    /// The category of the alert a request becomes; routing and deadlines go by it.
    pub category: String,
    /// The severity of that alert.
    pub severity: cityward_detect::Severity,
}

impl Default for Open311Config {
    fn default() -> Self {
        use cityward_detect::Severity;
        let service = |code: &str, name: &str, description: &str, group: &str, keywords: &[&str], category: &str, severity| {
            Open311Service {
                code: code.into(),
                name: name.into(),
                description: description.into(),
                group: group.into(),
                keywords: keywords.iter().map(|k| k.to_string()).collect(),
                category: category.into(),
                severity,
            }
        };
        Open311Config {
            services: vec![
                service(
                    "fire_exit_blocked",
                    "Blocked fire exit",
                    "A fire exit, escape route or fire lane is blocked, locked or obstructed.",
                    "fire safety",
                    &["fire exit", "escape route", "fire lane"],
                    "fire.exit_blocked",
                    Severity::High,
                ),
                service(
                    "streetlight",
                    "Broken streetlight",
                    "A streetlight is out, flickering or damaged.",
                    "streets",
                    &["lamp", "street light", "dark street"],
                    "infra.streetlight",
                    Severity::Low,
                ),
                service(
                    "water_leak",
                    "Water leak",
                    "Water is leaking from a main, a hydrant or a pipe in a public place.",
                    "water",
                    &["burst pipe", "hydrant", "flooding"],
                    "water.leak",
                    Severity::Medium,
                ),
                service(
                    "pothole",
                    "Pothole",
                    "A hole or broken surface in a road, cycle lane or pavement.",
                    "streets",
                    &["road damage", "road surface"],
                    "traffic.pothole",
                    Severity::Low,
                ),
                service(
                    "illegal_dumping",
                    "Illegal dumping",
                    "Rubbish, furniture, rubble or hazardous waste left in a public place.",
                    "sanitation",
                    &["fly-tipping", "rubbish", "waste"],
                    "env.dumping",
                    Severity::Medium,
                ),
            ],
        }
    }
}

impl Open311Config {
    /// Checks the service list: codes usable in a URL and unique, names and categories set,
    /// keywords without commas.
    pub fn check(&self) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for (i, s) in self.services.iter().enumerate() {
            let at = format!("open311.services[{i}] (code `{}`)", s.code);
            let url_safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
            if s.code.is_empty() || s.code.len() > 64 || !s.code.chars().all(url_safe) {
                return Err(format!("{at}: code must be 1 to 64 letters, digits, `.`, `_` or `-`"));
            }
            if !seen.insert(s.code.as_str()) {
                return Err(format!("{at}: code is used twice; give each service its own code"));
            }
            if s.name.trim().is_empty() || s.category.trim().is_empty() {
                return Err(format!("{at}: name and category must not be empty"));
            }
            if let Some(k) = s.keywords.iter().find(|k| k.contains(',')) {
                return Err(format!("{at}: keyword `{k}` contains a comma; list it as separate keywords"));
            }
        }
        Ok(())
    }
}

mod duration_map {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<String, Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        map.iter()
            .map(|(k, v)| (k.clone(), cityward_model::format_duration(*v)))
            .collect::<BTreeMap<_, _>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Duration>, D::Error> {
        BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| {
                cityward_model::parse_duration(&v)
                    .map(|d| (k.clone(), d))
                    .map_err(|e| serde::de::Error::custom(format!("lake.retention.{k}: {e}")))
            })
            .collect()
    }
}

/// What went wrong reading a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration {path}: {error}; check the path, or print a starting point with `cityward config default > cityward.toml`")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error (part of the message, so not a separate `source`).
        error: std::io::Error,
    },
    /// The file is not valid for [`NodeConfig`].
    #[error("configuration {path} is not valid: {message}; `cityward config default` shows every setting with its default")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What the parser said, with line and column.
        message: String,
    },
}

impl NodeConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let config: NodeConfig = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.check().map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    fn check_scale(&self) -> Result<(), String> {
        let scale = &self.scale;
        cityward_tier::check_node_name(&self.node.name).map_err(|e| format!("node.name {e}"))?;
        if !["source", "grid"].contains(&scale.key.as_str()) {
            return Err(format!("scale.key `{}` must be source or grid", scale.key));
        }
        if scale.partitions == 0 || scale.partitions > 1024 {
            return Err(format!("scale.partitions {} must be 1 to 1024", scale.partitions));
        }
        if !scale.member.is_empty() {
            cityward_tier::check_node_name(&scale.member).map_err(|e| format!("scale.member {e}"))?;
        }
        if scale.lease < Duration::from_millis(500) {
            return Err(format!("scale.lease {:?} is too short; a lease is renewed three times per lease, so give at least 500ms", scale.lease));
        }
        if self.state.backend != "postgres" {
            return Err("scale.enabled needs state.backend = \"postgres\": the processes of a node share alerts, rules and each partition's saved state there".into());
        }
        if !self.detect.enabled {
            return Err("scale.enabled shares detection between processes, but detect.enabled is false".into());
        }
        if scale.max_bytes != 0 && (scale.max_bytes < 1 << 20 || scale.max_bytes > i64::MAX as u64) {
            return Err(format!("scale.max_bytes {} must be 0 (no limit) or at least 1 MiB", scale.max_bytes));
        }
        Ok(())
    }

    /// Cross-field checks that serde cannot express.
    pub fn check(&self) -> Result<(), String> {
        if !["community", "street", "city"].contains(&self.node.role.as_str()) {
            return Err(format!(
                "node.role `{}` must be community, street or city",
                self.node.role
            ));
        }
        if !["sqlite", "postgres"].contains(&self.state.backend.as_str()) {
            return Err(format!("state.backend `{}` must be sqlite or postgres", self.state.backend));
        }
        if self.tier.enabled {
            cityward_tier::check_node_name(&self.node.name).map_err(|e| format!("node.name {e}"))?;
            if !self.tier.parent.is_empty() {
                cityward_tier::check_node_name(&self.tier.parent).map_err(|e| format!("tier.parent {e}"))?;
                if self.tier.parent == self.node.name {
                    return Err(format!("tier.parent `{}` is this node itself; name the node of the tier above", self.tier.parent));
                }
            }
            if self.node.role != "city" && self.tier.parent.is_empty() {
                return Err(format!(
                    "node.role is `{}` but tier.parent is empty; a {} node sends its alerts up, so name the node above it",
                    self.node.role, self.node.role
                ));
            }
            if self.tier.outbox_max_bytes < 1 << 20 || self.tier.outbox_max_bytes > i64::MAX as u64 {
                return Err(format!("tier.outbox_max_bytes {} must be at least 1 MiB", self.tier.outbox_max_bytes));
            }
        }
        if self.scale.enabled {
            self.check_scale()?;
        }
        for topic in &self.mqtt.topics {
            topic.check()?;
        }
        let url = |name: &str, u: &str| -> Result<(), String> {
            if u.starts_with("https://") || u.starts_with("http://") || u.starts_with('/') {
                Ok(())
            } else {
                Err(format!("city.{name} `{u}` must be an http(s) URL or a path on this server"))
            }
        };
        match (&self.city.basemap_style, &self.city.basemap_xyz) {
            (Some(_), Some(_)) => return Err("set city.basemap_style or city.basemap_xyz, not both".into()),
            (Some(style), None) => url("basemap_style", style)?,
            (None, Some(xyz)) => {
                url("basemap_xyz", xyz)?;
                if !["{z}", "{x}", "{y}"].iter().all(|p| xyz.contains(p)) {
                    return Err(format!("city.basemap_xyz `{xyz}` must contain {{z}}, {{x}} and {{y}}"));
                }
            }
            (None, None) => {}
        }
        self.kind_registry().attribute_columns()?;
        if self.detect.checkpoint_every.is_zero() {
            return Err("detect.checkpoint_every must be longer than 0s".into());
        }
        if !["wall", "event"].contains(&self.detect.clock.as_str()) {
            return Err(format!("detect.clock `{}` must be wall or event", self.detect.clock));
        }
        if self.detect.max_evidence == 0 {
            return Err("detect.max_evidence must be at least 1".into());
        }
        self.open311.check()?;
        self.search.check()?;
        let d = &self.dispatch;
        if d.stale_after.is_zero() {
            return Err("dispatch.stale_after must be longer than 0s, e.g. \"10m\"".into());
        }
        if !(d.urban_speed_kmh > 0.0 && d.urban_speed_kmh <= 200.0) {
            return Err(format!("dispatch.urban_speed_kmh = {} is out of range; use more than 0 and at most 200", d.urban_speed_kmh));
        }
        if !(d.snap_m >= 0.0 && d.join_m >= 0.0 && d.join_m <= 50.0) {
            return Err("dispatch.snap_m must be 0 or more and dispatch.join_m 0 to 50 metres".into());
        }
        self.alerts.validate()
    }

    /// The built-in kinds plus the configured ones.
    pub fn kind_registry(&self) -> KindRegistry {
        let mut kinds = KindRegistry::builtin();
        for (name, schema) in &self.kinds {
            kinds.declare(name.clone(), schema.clone());
        }
        kinds
    }
}

/// The commented default configuration printed by `cityward config default`.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("default_config.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_default_is_the_default() {
        let parsed: NodeConfig = toml::from_str(DEFAULT_CONFIG_TOML).unwrap();
        assert_eq!(parsed, NodeConfig::default());
    }

    #[test]
    fn every_setting_is_documented_in_the_printed_default() {
        // Every key of the serialized default appears (commented or not) in the template.
        let value = toml::Value::try_from(NodeConfig::default()).unwrap();
        fn keys(prefix: &str, value: &toml::Value, out: &mut Vec<String>) {
            if let toml::Value::Table(table) = value {
                for (k, v) in table {
                    out.push(k.clone());
                    keys(&format!("{prefix}{k}."), v, out);
                }
            }
        }
        let mut all = Vec::new();
        keys("", &value, &mut all);
        for key in all {
            assert!(
                DEFAULT_CONFIG_TOML.contains(&key),
                "`{key}` is missing from default_config.toml"
            );
        }
    }

    #[test]
    fn the_configuration_reference_shows_the_current_default() {
        let reference = include_str!("../../../docs/CONFIGURATION.md");
        assert!(
            reference.contains(DEFAULT_CONFIG_TOML),
            "docs/CONFIGURATION.md is stale: paste the output of `cityward config default` into it"
        );
    }

    #[test]
    fn dispatch_and_alert_settings_out_of_range_are_refused_by_name() {
        let mut c = NodeConfig::default();
        c.dispatch.urban_speed_kmh = 0.0;
        assert!(c.check().unwrap_err().contains("dispatch.urban_speed_kmh"));
        let mut c = NodeConfig::default();
        c.dispatch.stale_after = Duration::ZERO;
        assert!(c.check().unwrap_err().contains("dispatch.stale_after"));
        let mut c = NodeConfig::default();
        c.alerts.boundary_m = -1.0;
        assert!(c.check().unwrap_err().contains("alerts.boundary_m"));
        let parsed: NodeConfig = toml::from_str("[dispatch]\nstale_after = \"2m\"\n").unwrap();
        assert_eq!(parsed.dispatch.stale_after, Duration::from_secs(120));
        assert!(parsed.check().is_ok());
    }

    #[test]
    fn unknown_settings_are_refused_with_their_name() {
        let err =
            toml::from_str::<NodeConfig>("[node]\nlisten_addr = \"0.0.0.0:1\"\n").unwrap_err();
        assert!(err.to_string().contains("listen_addr"), "{err}");
    }

    #[test]
    fn mqtt_mappings_and_retention_parse() {
        let config: NodeConfig = toml::from_str(
            r#"
            [mqtt]
            enabled = true
            [[mqtt.topics]]
            filter = "city/gas/+/data"
            kind = "gas"
            source_topic_level = 2
            [mqtt.topics.rename]
            ppm = "value"
            [lake.retention]
            plate_read = "30d"
            "#,
        )
        .unwrap();
        config.check().unwrap();
        assert_eq!(
            config.lake.retention["plate_read"],
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(config.mqtt.topics[0].rename["ppm"], "value");
    }
}
