//! Appends events with an expected version, reads them forward and backward, and shows
//! the typed wrong-expected-version error.
//!
//! ```sh
//! cargo xtask testbed up
//! cargo run -p gater-api --example append_and_read
//! ```

#[path = "common/mod.rs"]
mod common;

use gater_api::{Direction, ExpectedVersion, GaterError, NewEvent};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let gater = common::connect().await?;
    let store = common::store();
    let stream = format!("example-account-{}", gater_api::uuid_v7());

    let v = gater
        .append_events_expected(
            store.as_str(),
            &stream,
            ExpectedVersion::NoStream,
            vec![
                NewEvent::json("AccountOpened:v1", serde_json::json!({"owner": "ann"})),
                NewEvent::json("Deposited:v1", serde_json::json!({"amount": 100})),
            ],
        )
        .await?;
    println!("appended to {stream}: now at version {v}");

    let v = gater
        .append_events_expected(
            store.as_str(),
            &stream,
            ExpectedVersion::Exact(v),
            vec![NewEvent::json(
                "Withdrawn:v1",
                serde_json::json!({"amount": 30}),
            )],
        )
        .await?;
    println!("appended again: version {v}");

    match gater
        .append_events_expected(
            store.as_str(),
            &stream,
            ExpectedVersion::Exact(0),
            vec![NewEvent::json(
                "Withdrawn:v1",
                serde_json::json!({"amount": 1}),
            )],
        )
        .await
    {
        Err(GaterError::WrongExpectedVersion { current }) => {
            println!("stale writer rejected: the stream is at {current}")
        }
        other => println!("unexpected: {other:?}"),
    }

    for r in gater
        .get_events(store.as_str(), &stream, 0, 100, Direction::Forward)
        .await?
    {
        println!(
            "#{} {} {} {}",
            r.event_number,
            r.event_type,
            r.created,
            r.data_json()
        );
    }
    let last = gater
        .get_events(store.as_str(), &stream, v, 1, Direction::Backward)
        .await?;
    println!("last event: {:?}", last.first().map(|r| &r.event_type));
    println!(
        "version: {}",
        gater.get_version(store.as_str(), &stream).await?
    );
    println!("metrics: {:?}", gater.metrics());
    Ok(())
}
