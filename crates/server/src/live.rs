//! `GET /api/v1/alerts/stream`: alert changes as Server-Sent Events, each caller getting
//! only the changes of alerts in its jurisdiction. A client that falls behind by more than
//! the desk's buffer gets a `lagged` event telling it to reload the list, never a silently
//! partial stream.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;

use crate::http::{require, ApiError, Caller, ALERT_NEED, ALERT_ROLES};
use crate::node::Node;

/// The live stream of alert changes (`event: alert`, data: the change as JSON).
pub(crate) async fn alert_stream(
    State(node): State<Arc<Node>>,
    Caller(user): Caller,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    require(&user, ALERT_ROLES, ALERT_NEED)?;
    let changes = node.subscribe_alert_changes();
    let jurisdiction = node.desk().jurisdiction(&user);
    node.metrics().add("cityward_alerts_stream_clients_total", &[], 1.0);
    let stream = futures_util::stream::unfold((changes, jurisdiction), |(mut changes, jurisdiction)| async move {
        loop {
            let event = match changes.recv().await {
                Ok(change) if jurisdiction.sees(&change.scopes) => {
                    let id = change.alert.get("id").and_then(|v| v.as_str()).unwrap_or_default().to_string();
                    Event::default().event("alert").id(id).json_data(&*change).unwrap_or_default()
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => Event::default()
                    .event("lagged")
                    .data(format!("{n} alert changes were skipped because this client read too slowly; reload GET /api/v1/alerts")),
                Err(RecvError::Closed) => return None,
            };
            return Some((Ok(event), (changes, jurisdiction)));
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
