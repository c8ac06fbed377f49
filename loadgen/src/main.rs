//! `loadgen run | compare | plot | reference`.

use clap::{Parser, Subcommand};
use loadgen::cli::RunArgs;
use loadgen::compare::CompareArgs;
use loadgen::plot::PlotArgs;
use loadgen::reference::ReferenceArgs;
use std::process::ExitCode;

/// Load generator for MQTT 3.1.1 / 5.0 brokers.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about, args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Drive a broker with a scenario and report rates, latency and losses.
    Run(Box<RunArgs>),
    /// Print runs side by side; --fail-if thresholds set the exit code.
    Compare(CompareArgs),
    /// Draw the latency percentile curves of runs into one SVG or PNG.
    Plot(PlotArgs),
    /// Measure this host's loopback round trip without a broker (the
    /// latency gate's reference for scaling its thresholds).
    Reference(ReferenceArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => loadgen::run::run(*args),
        Command::Compare(args) => loadgen::compare::run(&args),
        Command::Plot(args) => loadgen::plot::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Reference(args) => loadgen::reference::run(&args).map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|e| {
        eprintln!("loadgen: {e:#}");
        ExitCode::from(2)
    })
}
