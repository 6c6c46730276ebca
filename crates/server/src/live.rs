//! `GET /api/v1/alerts/stream`: alert changes as Server-Sent Events, each caller getting
//! only the changes of alerts in its jurisdiction (the desk sends each change to the
//! channels of the units that may see it). A client that falls behind by more than
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
    let changes = node.subscribe_alert_changes(&user);
    node.metrics().add("cityward_alerts_stream_clients_total", &[], 1.0);
    let stream = futures_util::stream::unfold(changes, |mut changes| async move {
        let event = match changes.recv().await {
            Ok(change) => Event::default().event("alert").id(change.id.as_str()).data(change.json.as_str()),
            Err(RecvError::Lagged(n)) => Event::default()
                .event("lagged")
                .data(format!("{n} alert changes were skipped because this client read too slowly; reload GET /api/v1/alerts")),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(event), changes))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
