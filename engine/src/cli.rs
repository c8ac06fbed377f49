//! The `ringmq` command line: run the broker (the default) or write a
//! password file entry.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

/// An MQTT 3.1.1 / 5.0 broker, thread-per-core on io_uring.
#[derive(Debug, Parser)]
#[command(name = "ringmq", version)]
pub struct Args {
    /// Config file (TOML); flags override its values.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to accept MQTT over TCP on; repeat for several.
    #[arg(short, long, value_name = "ADDR")]
    pub listen: Vec<SocketAddr>,
    /// Address of the admin HTTP endpoint (OpenAPI, metrics, status
    /// page); an empty string turns it off.
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<String>,
    /// Shards (one per core by default).
    #[arg(long)]
    pub shards: Option<usize>,
    /// Data directory.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log filter (`info`, `debug`, `ringmq=trace`, …).
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add or replace a user in a password file (argon2id, salted). On a
    /// terminal the password is asked for twice without echo; otherwise it
    /// is the first line of stdin. Empty passwords are refused. A new file
    /// is 0600; an existing one keeps its owner and group and loses any
    /// access for others.
    Passwd {
        /// The password file; created if missing.
        file: PathBuf,
        /// The user name.
        user: String,
    },
    /// Mint a token of the aliyun profile, as ApplyToken does, signed
    /// with an access key of the config file; prints it. (Tokens minted
    /// here are valid but not listed among the registry's issued ones.)
    Token {
        /// AccessKeyId, one of `[[aliyun.access_keys]]`.
        #[arg(long)]
        access_key: String,
        /// Topic filters the token covers, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        resources: Vec<String>,
        /// `R`, `W` or `R,W`.
        #[arg(long)]
        actions: String,
        /// Seconds from now until the token expires.
        #[arg(long)]
        expire_secs: u64,
    },
    /// Call the admin endpoint's OpenAPI (aliyun profile): signs ACTION
    /// with an access key of the config file and prints the JSON answer;
    /// exits 1 if it is an error. Example:
    /// `ringmq -c ringmq.toml api QuerySessionByClientId ClientId=GID_x@@@d1`
    /// (InstanceId is added from the config unless given).
    Api {
        /// The action, e.g. `ListGroupId`.
        action: String,
        /// Parameters as `Name=Value` (arrays as `Name.1=…`).
        params: Vec<String>,
        /// AccessKeyId (default: the first of `[[aliyun.access_keys]]`).
        #[arg(long)]
        access_key: Option<String>,
        /// `host:port` of the endpoint (default: `admin.listen`).
        #[arg(long)]
        endpoint: Option<String>,
    },
}

/// Runs the command line; the binary's `main`.
pub fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Passwd { file, user }) = &args.command {
        return match crate::passwd::add_user_from_stdin(file, user) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ringmq passwd: {e}");
                ExitCode::from(2)
            }
        };
    }
    let config = match effective_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringmq: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Token {
        access_key,
        resources,
        actions,
        expire_secs,
    }) = &args.command
    {
        let request = crate::core::aliyun::TokenRequest {
            access_key,
            resources,
            actions,
            expire_ms: crate::instance::registrar::now_ms() + expire_secs * 1000,
        };
        return mint_token(&config, request);
    }
    if let Some(Command::Api {
        action,
        params,
        access_key,
        endpoint,
    }) = &args.command
    {
        return api(
            &config,
            action,
            params,
            access_key.as_deref(),
            endpoint.as_deref(),
        );
    }
    if args.print_config {
        match toml::to_string_pretty(&config) {
            Ok(text) => {
                #[allow(clippy::print_stdout)]
                {
                    print!("{text}");
                }
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("ringmq: {e}");
                return ExitCode::from(2);
            }
        }
    }
    init_logging(&config.log_level);
    match crate::instance::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            fatal(&e);
            match e {
                crate::shard::RunError::Config(_) => ExitCode::from(2),
                _ => ExitCode::from(1),
            }
        }
    }
}

/// Reports the error that stopped the broker once: as a log line when
/// errors are logged, else as a plain `ringmq:` line.
fn fatal(e: &crate::shard::RunError) {
    match tracing::enabled!(tracing::Level::ERROR) {
        true => tracing::error!("{e}"),
        false => eprintln!("ringmq: {e}"),
    }
}

/// `ringmq token`: prints a token signed with an access key of `config`.
fn mint_token(config: &Config, request: crate::core::aliyun::TokenRequest<'_>) -> ExitCode {
    let a = &config.aliyun;
    let Some(key) = a.access_keys.iter().find(|k| k.id == request.access_key) else {
        eprintln!(
            "ringmq token: no access key {} in [[aliyun.access_keys]]",
            request.access_key
        );
        return ExitCode::from(2);
    };
    let now = crate::instance::registrar::now_ms();
    let id = crate::instance::registrar::hex_id();
    match request.claims(a, &a.instance_id, now, id) {
        Ok(claims) => {
            #[allow(clippy::print_stdout)]
            {
                println!("{}", crate::core::aliyun::token::sign(&claims, &key.secret));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringmq token: {e}");
            ExitCode::from(2)
        }
    }
}

/// `ringmq api`: one signed OpenAPI call; prints the answer.
fn api(
    config: &Config,
    action: &str,
    params: &[String],
    access_key: Option<&str>,
    endpoint: Option<&str>,
) -> ExitCode {
    let keys = &config.aliyun.access_keys;
    let key = match access_key {
        Some(id) => keys.iter().find(|k| k.id == id),
        None => keys.first(),
    };
    let Some(key) = key else {
        eprintln!("ringmq api: no such access key in [[aliyun.access_keys]] of the config");
        return ExitCode::from(2);
    };
    let mut pairs = Vec::with_capacity(params.len() + 1);
    for p in params {
        let Some((k, v)) = p.split_once('=') else {
            eprintln!("ringmq api: {p}: parameters are Name=Value");
            return ExitCode::from(2);
        };
        pairs.push((k.to_owned(), v.to_owned()));
    }
    if !pairs.iter().any(|(k, _)| k == "InstanceId") {
        pairs.push(("InstanceId".into(), config.aliyun.instance_id.clone()));
    }
    let endpoint = endpoint.unwrap_or(&config.admin.listen);
    match crate::admin::client::call(endpoint, &key.id, &key.secret, action, &pairs) {
        Ok(reply) => {
            #[allow(clippy::print_stdout)]
            {
                println!("{}", reply.body);
            }
            match reply.status {
                200..=299 => ExitCode::SUCCESS,
                _ => ExitCode::from(1),
            }
        }
        Err(e) => {
            eprintln!("ringmq api: {e}");
            ExitCode::from(2)
        }
    }
}

fn effective_config(args: &Args) -> Result<Config, crate::config::ConfigError> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if !args.listen.is_empty() {
        config.listeners.tcp.clone_from(&args.listen);
    }
    if let Some(addr) = &args.admin_listen {
        config.admin.listen.clone_from(addr);
    }
    if let Some(n) = args.shards {
        config.shards = n;
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir.clone_from(dir);
    }
    if let Some(level) = &args.log_level {
        config.log_level.clone_from(level);
    }
    config.validate()?;
    Ok(config)
}

/// Structured logs to stderr; `RUST_LOG` wins over the configured filter.
/// Records of the `log` crate (glommio's warnings) are captured too.
/// rustls warns of every client that sends an IP address as SNI (mosquitto
/// does): its own messages below errors are left out unless asked for.
/// async-nats logs every failed reconnect at INFO, every few seconds while
/// NATS is down (the bridge warns once): below warnings, left out too.
fn init_logging(level: &str) {
    let mut level = level.to_owned();
    for (target, floor) in [("rustls", "error"), ("async_nats", "warn")] {
        if !level.contains(target) {
            level = format!("{level},{target}={floor}");
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
