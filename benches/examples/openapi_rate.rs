//! OpenAPI requests per second against a running ringmq (aliyun profile):
//! N keep-alive HTTP/1.1 connections, each sending one signed request
//! after another (a fresh nonce and signature each, as an SDK does).
//!
//! ```text
//! cargo run --release -p ringmq-benches --example openapi_rate -- \
//!     127.0.0.1:18083 AK SECRET INSTANCE QuerySessionByClientId 8 10 [Name=Value …]
//! ```
//! Prints requests/s and the answers by HTTP status.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ringmq_engine::admin::client::signed_query;

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [endpoint, key, secret, instance, action, conns, secs, rest @ ..] = args.as_slice() else {
        return Err("usage: openapi_rate ENDPOINT AK SECRET INSTANCE ACTION CONNECTIONS SECS [Name=Value …]".into());
    };
    let conns: usize = conns.parse().map_err(|_| "CONNECTIONS: a number")?;
    let secs: u64 = secs.parse().map_err(|_| "SECS: a number")?;
    let mut params = vec![("InstanceId".to_owned(), instance.clone())];
    for p in rest {
        let (k, v) = p.split_once('=').ok_or("parameters are Name=Value")?;
        params.push((k.to_owned(), v.to_owned()));
    }
    let until = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let (endpoint, key, secret, action, params) = (
                endpoint.clone(),
                key.clone(),
                secret.clone(),
                action.clone(),
                params.clone(),
            );
            std::thread::spawn(move || drive(&endpoint, &key, &secret, &action, &params, until))
        })
        .collect();
    let mut by_status: BTreeMap<u16, u64> = BTreeMap::new();
    for t in threads {
        for (status, n) in t.join().map_err(|_| "a thread panicked")?? {
            *by_status.entry(status).or_insert(0) += n;
        }
    }
    let took = started.elapsed().as_secs_f64();
    let total: u64 = by_status.values().sum();
    #[allow(clippy::print_stdout)]
    {
        println!(
            "{action}: {:.0} requests/s over {conns} connections ({total} in {took:.1} s); by status: {by_status:?}",
            total as f64 / took
        );
    }
    Ok(())
}

/// One connection's requests until `until`; answers counted by status.
fn drive(
    endpoint: &str,
    key: &str,
    secret: &str,
    action: &str,
    params: &[(String, String)],
    until: Instant,
) -> Result<BTreeMap<u16, u64>, String> {
    let stream = TcpStream::connect(endpoint).map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut counts = BTreeMap::new();
    while Instant::now() < until {
        let query = signed_query(key, secret, action, params);
        let request = format!(
            "POST /?{query} HTTP/1.1\r\nHost: {endpoint}\r\nx-acs-action: {action}\r\nContent-Length: 0\r\n\r\n"
        );
        writer
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        let status = read_answer(&mut reader)?;
        *counts.entry(status).or_insert(0) += 1;
    }
    Ok(counts)
}

/// Reads one answer; returns its status.
fn read_answer(r: &mut BufReader<TcpStream>) -> Result<u16, String> {
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| e.to_string())?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {line:?}"))?;
    let mut length = 0usize;
    loop {
        line.clear();
        r.read_line(&mut line).map_err(|e| e.to_string())?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((name, value)) = l.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().map_err(|_| "bad content-length")?;
            }
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok(status)
}
