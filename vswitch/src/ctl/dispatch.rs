//! One request line in, one reply value out: parsing a request with messages that name the
//! bad field, and routing it to the switch's [`CtlHandler`]. Transport-free, so that any
//! transport answers exactly as the socket does.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::protocol::{
    CaptureArgs, ChannelsReply, FdbReply, PmdStatsReply, RebalanceArgs, RebalanceReply,
    RxqShowReply, ShowReply, StatsReply, COMMANDS,
};
use crate::capture::Tap;
use crate::config::PortSpec;
use crate::evpn::EvpnReply;

/// What the switch provides to the control socket. Called from the control socket's
/// connection threads, never from a PMD.
pub trait CtlHandler: Send + Sync {
    fn show(&self) -> ShowReply;
    fn stats(&self) -> StatsReply;
    fn fdb(&self) -> FdbReply;
    fn pmd_stats(&self) -> PmdStatsReply;
    /// Which poll thread polls which queue, and each queue's load.
    fn pmd_rxq_show(&self) -> RxqShowReply;
    /// Moves queues between poll threads by measured load (or, dry run, says how it would).
    fn pmd_rxq_rebalance(&self, args: &RebalanceArgs) -> Result<RebalanceReply, String>;
    /// Fast-path channels granted by the hooks, with their counters.
    fn channels(&self) -> ChannelsReply {
        ChannelsReply::default()
    }
    /// The EVPN segments' state (`--evpn`): none unless the switch runs EVPN.
    fn evpn(&self) -> EvpnReply {
        EvpnReply::default()
    }
    /// The capture hook of port `name` (any kind of port), for `capture`.
    fn tap(&self, name: &str) -> Result<Arc<Tap>, String> {
        Err(format!("this switch cannot capture port `{name}`"))
    }
    /// `spec` has passed [`PortSpec::validate`]; the handler checks it against live ports.
    fn add_port(&self, spec: PortSpec) -> Result<(), String>;
    fn del_port(&self, name: &str) -> Result<(), String>;
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DelPortArgs {
    name: String,
}

fn to_data<T: Serialize>(reply: T) -> Result<Value, String> {
    serde_json::to_value(reply).map_err(|e| format!("internal error encoding the reply: {e}"))
}

/// Parses one request line and runs it. Public so that other transports (tests, an
/// in-process console) answer exactly as the socket does.
pub fn dispatch(handler: &dyn CtlHandler, line: &[u8]) -> Result<Value, String> {
    let text =
        std::str::from_utf8(line).map_err(|e| format!("malformed request: not UTF-8 ({e})"))?;
    let value: Value = serde_json::from_str(text).map_err(|e| format!("malformed JSON: {e}"))?;
    let Value::Object(mut args) = value else {
        return Err(format!(
            "request must be a JSON object such as {{\"cmd\":\"show\"}}, got {}",
            kind_of(&value)
        ));
    };
    let cmd = match args.remove("cmd") {
        Some(Value::String(cmd)) => cmd,
        Some(other) => {
            return Err(format!(
                "`cmd` must be a string (one of {COMMANDS}), got {}",
                kind_of(&other)
            ))
        }
        None => return Err(format!("missing `cmd`: expected one of {COMMANDS}")),
    };
    let no_args = |args: &serde_json::Map<String, Value>| match args.keys().next() {
        Some(k) => Err(format!("{cmd} takes no arguments, got `{k}`")),
        None => Ok(()),
    };
    match cmd.as_str() {
        "show" => no_args(&args).and_then(|()| to_data(handler.show())),
        "stats" => no_args(&args).and_then(|()| to_data(handler.stats())),
        "fdb" => no_args(&args).and_then(|()| to_data(handler.fdb())),
        "pmd-stats" => no_args(&args).and_then(|()| to_data(handler.pmd_stats())),
        "pmd-rxq-show" => no_args(&args).and_then(|()| to_data(handler.pmd_rxq_show())),
        "pmd-rxq-rebalance" => {
            field_types(&cmd, &args, &[("dry_run", Kind::Bool)])?;
            let a: RebalanceArgs = serde_json::from_value(Value::Object(args))
                .map_err(|e| format!("pmd-rxq-rebalance: {e}"))?;
            handler.pmd_rxq_rebalance(&a).and_then(to_data)
        }
        "channels" => no_args(&args).and_then(|()| to_data(handler.channels())),
        "evpn" => no_args(&args).and_then(|()| to_data(handler.evpn())),
        "add-port" => {
            field_types(
                &cmd,
                &args,
                &[
                    ("name", Kind::String),
                    ("mode", Kind::String),
                    ("path", Kind::String),
                    ("vlan", Kind::Number),
                    ("queues", Kind::Number),
                    ("fastpath", Kind::Bool),
                ],
            )?;
            let spec: PortSpec = serde_json::from_value(Value::Object(args))
                .map_err(|e| format!("add-port: {e}"))?;
            spec.validate().map_err(|e| format!("add-port: {e}"))?;
            handler.add_port(spec).map(|()| Value::Null)
        }
        "del-port" => {
            field_types(&cmd, &args, &[("name", Kind::String)])?;
            let a: DelPortArgs = serde_json::from_value(Value::Object(args))
                .map_err(|e| format!("del-port: {e}"))?;
            handler.del_port(&a.name).map(|()| Value::Null)
        }
        "capture" => Err(
            "capture streams frames and is served on a control socket connection only".to_owned(),
        ),
        other => Err(format!(
            "unknown command `{other}`: expected one of {COMMANDS}"
        )),
    }
}

/// The JSON type a request field must have.
#[derive(Clone, Copy)]
enum Kind {
    String,
    Number,
    Bool,
}

/// Checks the type of each known field present in `args` (`null` stands for an absent optional
/// field), so a wrong type is refused with the field's name; serde's own message for a
/// `Value` names the type but not the field.
fn field_types(
    cmd: &str,
    args: &serde_json::Map<String, Value>,
    fields: &[(&str, Kind)],
) -> Result<(), String> {
    for &(name, kind) in fields {
        let Some(v) = args.get(name) else { continue };
        let ok = matches!(
            (kind, v),
            (_, Value::Null)
                | (Kind::String, Value::String(_))
                | (Kind::Number, Value::Number(_))
                | (Kind::Bool, Value::Bool(_))
        );
        if !ok {
            let want = match kind {
                Kind::String => "a string",
                Kind::Number => "a number",
                Kind::Bool => "a boolean",
            };
            return Err(format!(
                "{cmd}: `{name}` must be {want}, got {}",
                kind_of(v)
            ));
        }
    }
    Ok(())
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `Some` when `line` is a `capture` request: its checked arguments, or why they are refused.
/// Kept apart from [`dispatch`] because a capture is answered by a stream, not one reply.
pub fn capture_request(line: &[u8]) -> Option<Result<CaptureArgs, String>> {
    let Ok(Value::Object(mut args)) = serde_json::from_slice::<Value>(line) else {
        return None;
    };
    if args.get("cmd").and_then(Value::as_str) != Some("capture") {
        return None;
    }
    args.remove("cmd");
    let checked = field_types(
        "capture",
        &args,
        &[
            ("port", Kind::String),
            ("direction", Kind::String),
            ("count", Kind::Number),
        ],
    )
    .and_then(|()| {
        serde_json::from_value::<CaptureArgs>(Value::Object(args))
            .map_err(|e| format!("capture: {e}"))
    })
    .and_then(|a| match a.count {
        Some(0) => {
            Err("capture: `count` must be at least 1 (omit it to capture until stopped)".to_owned())
        }
        _ => Ok(a),
    });
    Some(checked)
}
