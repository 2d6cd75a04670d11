// @ts-check
// mims/notify — the four examples of seed 000 (context.dispatchWebSocketEvent), unchanged.
// Connect a client to ws://localhost:8083/ws/notify, then POST to /notify/notify.
app.post('/notify', (request, response) => {
context.dispatchWebSocketEvent({
type: 'notification',
message: 'New data available'
});
response.end(JSON.stringify({ sent: true }));
});

app.post('/user-update', (request, response) => {
var user = JSON.parse(request.body);
// Save user
context.storage.setItemWithTag('user:' + user.id, JSON.stringify(user), 'users');
// Notify connected clients
context.dispatchWebSocketEvent({
type: 'user-updated',
message: JSON.stringify({
userId: user.id,
timestamp: new Date().toISOString()
})
});
response.end(JSON.stringify({ updated: true }));
});

// Define event types as constants
var EVENT_TYPES = {
DATA_SYNC: 'data-sync',
STATUS_CHANGE: 'status-change',
ERROR: 'error'
};
app.post('/sync', (request, response) => {
// Perform sync operation...
context.dispatchWebSocketEvent({
type: EVENT_TYPES.DATA_SYNC,
message: JSON.stringify({
action: 'sync-complete',
recordCount: 42
})
});
response.end(JSON.stringify({ synced: true }));
});

app.post('/flush', (request, response) => {
// Dispatch without arguments to flush the queue
context.dispatchWebSocketEvent();
response.end(JSON.stringify({ flushed: true }));
});
