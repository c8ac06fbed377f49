//! The answers of the product's trace queries (QueryMqttTraceDevice,
//! QueryMqttTraceMessageOfClient, QueryMqttTraceMessagePublish,
//! QueryMqttTraceMessageSubscribe), built from the shards' events: merged
//! in time order, paged, in the field names and types the product's SDK
//! models read.

use serde::Serialize;

use super::TraceItem;

/// Paging of a query: pages count from 1, at most 100 items each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    /// The page wanted (1 is the first; past the last, an empty page).
    pub current_page: u32,
    /// Items per page, 1-100.
    pub page_size: u32,
    /// Newest first.
    pub reverse: bool,
}

/// Largest page the product serves.
pub const PAGE_SIZE_MAX: u32 = 100;

/// One device event (QueryMqttTraceDevice's `DeviceInfoList`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeviceInfo {
    /// `connect`, `close` or `disconnect`.
    pub action: String,
    /// `mqtt.trace.action.connect`, …
    pub action_code: String,
    /// `accepted`, `no heart`, …
    pub action_info: String,
    /// The connection.
    pub channel_id: String,
    /// `yyyy-MM-dd HH:mm:ss.SSS`.
    pub time: String,
}

/// One message event (`MessageOfClientList`, `MessageTraceLists`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MessageInfo {
    /// `pub_mqtt`, `sub`, `push_offline`, …
    pub action: String,
    /// `mqtt.trace.action.msg.pub.mqtt`, …
    pub action_code: String,
    /// `Pub From Mqtt Client`, …
    pub action_info: String,
    /// The publisher or the receiver.
    pub client_id: String,
    /// The message.
    pub msg_id: String,
    /// `yyyy-MM-dd HH:mm:ss.SSS`.
    pub time: String,
}

/// QueryMqttTraceDevice's answer (without `RequestId`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeviceTrace {
    /// The page's events.
    pub device_info_list: Vec<DeviceInfo>,
    /// Events in the whole range.
    pub total: u64,
    /// This page.
    pub current_page: u32,
    /// Items per page.
    pub page_size: u32,
}

/// QueryMqttTraceMessageOfClient's answer (without `RequestId`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MessageOfClientTrace {
    /// The page's events.
    pub message_of_client_list: Vec<MessageInfo>,
    /// Events in the whole range.
    pub total: u64,
    /// This page.
    pub current_page: u32,
    /// Items per page.
    pub page_size: u32,
}

/// QueryMqttTraceMessagePublish's answer (without `RequestId`; unpaged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PublishTrace {
    /// Who published the message.
    pub message_trace_lists: Vec<MessageInfo>,
}

/// QueryMqttTraceMessageSubscribe's answer (without `RequestId`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SubscribeTrace {
    /// The page's deliveries.
    pub message_trace_lists: Vec<MessageInfo>,
    /// Deliveries in the whole range.
    pub total: u64,
    /// This page.
    pub current_page: u32,
    /// Items per page.
    pub page_size: u32,
}

/// The shards' answers in time order (oldest first).
pub fn merge(shards: Vec<Vec<TraceItem>>) -> Vec<TraceItem> {
    let mut all: Vec<TraceItem> = shards.into_iter().flatten().collect();
    all.sort_by_key(|i| i.time_ms);
    all
}

/// The page `p` of `items` (in time order), and their total.
fn page(mut items: Vec<TraceItem>, p: Paging) -> (Vec<TraceItem>, u64) {
    let total = items.len() as u64;
    if p.reverse {
        items.reverse();
    }
    let size = p.page_size.clamp(1, PAGE_SIZE_MAX) as usize;
    let skip = (p.current_page.max(1) as usize - 1).saturating_mul(size);
    (items.into_iter().skip(skip).take(size).collect(), total)
}

fn device(i: TraceItem) -> DeviceInfo {
    DeviceInfo {
        action: i.action,
        action_code: i.action_code,
        action_info: i.action_info,
        channel_id: i.channel_id,
        time: i.time,
    }
}

fn message(i: TraceItem) -> MessageInfo {
    MessageInfo {
        action: i.action,
        action_code: i.action_code,
        action_info: i.action_info,
        client_id: i.client_id,
        msg_id: i.msg_id,
        time: i.time,
    }
}

impl DeviceTrace {
    /// Page `p` of a client's device events.
    pub fn new(items: Vec<TraceItem>, p: Paging) -> Self {
        let (items, total) = page(items, p);
        DeviceTrace {
            device_info_list: items.into_iter().map(device).collect(),
            total,
            current_page: p.current_page,
            page_size: p.page_size,
        }
    }
}

impl MessageOfClientTrace {
    /// Page `p` of a client's message events.
    pub fn new(items: Vec<TraceItem>, p: Paging) -> Self {
        let (items, total) = page(items, p);
        MessageOfClientTrace {
            message_of_client_list: items.into_iter().map(message).collect(),
            total,
            current_page: p.current_page,
            page_size: p.page_size,
        }
    }
}

impl PublishTrace {
    /// A message's publish events.
    pub fn new(items: Vec<TraceItem>) -> Self {
        PublishTrace {
            message_trace_lists: items.into_iter().map(message).collect(),
        }
    }
}

impl SubscribeTrace {
    /// Page `p` of a message's deliveries.
    pub fn new(items: Vec<TraceItem>, p: Paging) -> Self {
        let (items, total) = page(items, p);
        SubscribeTrace {
            message_trace_lists: items.into_iter().map(message).collect(),
            total,
            current_page: p.current_page,
            page_size: p.page_size,
        }
    }
}
