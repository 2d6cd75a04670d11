// `require('/lib/xp/websocket')` / `import websocket from '/lib/xp/websocket'`:
// sessions, groups and client ids of the container (SPEC 5.3). A tsconfig/jsconfig
// maps the name here with `paths` (a module name starting with `/` cannot be
// declared ambiently).
/// <reference path="../../mimhost.d.ts" />
declare const websocket: Mimhost.WebSocketLib;
export = websocket;
