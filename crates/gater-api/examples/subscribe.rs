//! Subscribes to one stream (transient) and to all streams (persistent, acked as it
//! goes), appends a few events, and prints what arrives.
//!
//! ```sh
//! cargo xtask testbed up
//! cargo run -p gater-api --example subscribe
//! ```

#[path = "common/mod.rs"]
mod common;

use futures::StreamExt;
use gater_api::{NewEvent, Selector, Subscription};
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let gater = common::connect().await?;
    let store = common::store();
    let stream = format!("example-orders-{}", gater_api::uuid_v7());

    let mut one = gater
        .subscribe(Subscription::transient(
            store.as_str(),
            Selector::Stream(stream.clone()),
        ))
        .await?;
    let mut all = gater
        .subscribe(
            Subscription::persistent(store.as_str(), Selector::AllStreams, "example-all")
                .start_from(0),
        )
        .await?;

    for i in 0..5 {
        gater
            .append_events(
                store.as_str(),
                &stream,
                vec![NewEvent::json(
                    "OrderPlaced:v1",
                    serde_json::json!({"order": i}),
                )],
            )
            .await?;
    }

    for _ in 0..5 {
        match tokio::time::timeout(Duration::from_secs(5), one.next()).await {
            Ok(Some(Ok(r))) => println!("{stream} #{} {}", r.event_number, r.data_json()),
            Ok(Some(Err(e))) => println!("subscription trouble: {e}"),
            Ok(None) => break,
            Err(_) => {
                println!("no event within 5 s (is the store's emitter running?)");
                break;
            }
        }
    }
    // The persistent one replays from 0 across all streams; show the first few.
    for _ in 0..3 {
        if let Ok(Some(Ok(r))) = tokio::time::timeout(Duration::from_secs(5), all.next()).await {
            println!("$all: {} #{} {}", r.stream_id, r.event_number, r.event_type);
        }
    }
    drop(one);
    drop(all);
    let subs = gater.get_subscriptions(store.as_str()).await?;
    println!("{} subscriptions in {store}", subs.len());
    Ok(())
}
