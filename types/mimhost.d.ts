// TypeScript declarations for mimhost mims: the globals a mim sees, the request and
// response of each module format, `webSocketEvent`'s event, and the built-in modules
// `sdk/net` and `@cryb/mesa` (`/lib/xp/websocket` is in lib/xp/websocket.d.ts: a
// module name starting with `/` cannot be declared here, so a tsconfig/jsconfig maps
// it with `paths`, as mims/jsconfig.json does).
//
// Use: add `// @ts-check` to a mim and point a jsconfig.json at this folder (see
// docs/guide.md). The contract these follow is SPEC.md sections 3-7.

/** Types a mim can name in JSDoc: `@param {Mimhost.Request} request`. */
declare namespace Mimhost {
  /** Header and query maps: lower-case header names, decoded query values. */
  type StringMap = { [name: string]: string };

  /** The request of a route-style handler or a mimik bundle. */
  interface Request {
    method: string;
    /** Relative to the base path, with the query string: `/users?page=1`. */
    url: string;
    /** `url` without the query. */
    path: string;
    /** Route parameters (`:name` segments, `*` for the rest). */
    params: StringMap;
    query: StringMap;
    headers: StringMap;
    /** The body as text (`""` when none; invalid UTF-8 becomes U+FFFD). */
    body: string;
    /** The body exactly as the client sent it (binary uploads). */
    bodyBytes: Uint8Array;
    /** The `Authorization` header, or `""`. */
    authorization: string;
  }

  /** The response of a route-style handler or a mimik bundle. */
  interface Response {
    /** Status to send (default 200). */
    statusCode: number;
    setHeader(name: string, value: string | string[]): void;
    getHeader(name: string): string | string[] | undefined;
    removeHeader(name: string): void;
    status(code: number): Response;
    writeHead(code: number, headers?: { [name: string]: string | string[] }): Response;
    /** Starts a streamed (chunked) answer and sends `chunk`. */
    write(chunk: string | Uint8Array | ArrayBuffer): void;
    /** Finishes the answer; later calls are ignored. */
    end(body?: string | Uint8Array | ArrayBuffer): void;
    send(body: unknown): void;
    json(value: unknown): void;
  }

  type RouteHandler = (request: Request, response: Response) => unknown;
  /** `mimikModule.exports`: called for every request no `app` route took. */
  type MimikHandler = (context: Context, request: Request, response: Response) => unknown;

  /** `req` of a controller (CommonJS `exports.get`, ES `export function get`), Enonic's shape. */
  interface ControllerRequest {
    method: string;
    scheme: string;
    host: string;
    port: number;
    /** The absolute path as the client sent it. */
    path: string;
    /** Absolute URL with the query. */
    url: string;
    /** Query parameters plus urlencoded form fields. */
    params: StringMap;
    headers: StringMap;
    cookies: StringMap;
    body: string;
    /** The body exactly as the client sent it (binary uploads). */
    bodyBytes: Uint8Array;
    remoteAddress: string;
    /** True for a WebSocket upgrade: return `{webSocket: …}` to accept it. */
    webSocket: boolean;
    /** The container's base path. */
    contextPath: string;
  }

  /** What a controller returns (or resolves to). */
  interface ControllerResponse {
    status?: number;
    /** An object or array is sent as JSON. */
    body?: unknown;
    contentType?: string;
    headers?: StringMap;
    /** Accepts a WebSocket upgrade; `data` comes back as `event.data`. */
    webSocket?: true | { data?: unknown; subProtocols?: string[] };
  }

  type Controller = (req: ControllerRequest) => ControllerResponse | string | void | Promise<ControllerResponse | string | void>;

  /** Enonic's anonymous principal (mimhost has no identity provider). */
  interface User {
    key: string;
    displayName: string;
    modifiedTime: string;
    disabled: boolean;
    login: string;
    idProvider: string;
  }

  /** The event `webSocketEvent` gets for each session event, in order per session. */
  interface WebSocketEvent {
    type: 'open' | 'message' | 'close' | 'error';
    session: { id: string; path: string; params: StringMap; user: User };
    /** What `get()` returned as `webSocket.data` (null on the dispatch channel). */
    data: any;
    /** `message` events: the text (base64 when `binary`). */
    message?: string;
    binary?: boolean;
    /** `close` events: the close code. */
    closeReason?: number;
    /** `error` events: why. */
    error?: string;
    sessionId: string;
    peer: string;
    method: string;
    query: StringMap;
    headers: StringMap;
    params: StringMap;
  }

  /** A `webSocketEvent` may answer the session: `body` is sent, a truthy `end` closes it. */
  interface WebSocketReply {
    body?: unknown;
    end?: boolean;
  }

  type WebSocketEventHandler = (event: WebSocketEvent) => WebSocketReply | void | Promise<WebSocketReply | void>;

  /** `context.storage`: one store per container, string values, oldest first. */
  interface Storage {
    getItem(key: string): string | null;
    setItem(key: string, value: string): void;
    setItemWithTag(key: string, value: string, tag: string): void;
    removeItem(key: string): void;
    /** Return `false` from the callback to stop. */
    eachItem(callback: (key: string, value: string) => boolean | void): void;
    eachItemByTag(tag: string, callback: (key: string, value: string) => boolean | void): void;
    /** Removes the items tagged `tag`; returns how many went. */
    removeItemsByTag(tag: string): number;
    /** Removes a file `context.http.request({outputFile})` wrote. */
    deleteFile(path: string): void;
  }

  /** `context.dispatchWebSocketEvent`'s event: the frame `{"type":…,"message":…}`. */
  interface DispatchEvent {
    type: string;
    message?: string;
  }

  /** `context.http.request`'s options (mimik's shape; times in milliseconds). */
  interface HttpRequestOptions {
    url: string;
    type?: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE' | 'HEAD' | 'OPTIONS' | string;
    /** A string is sent as is; an object or array as JSON. */
    data?: unknown;
    headers?: { [name: string]: string | null | undefined };
    /** The `Authorization` header's value, sent as given. */
    authorization?: string;
    /** `stream`: one `success` per chunk; `proxy`: redirects are not followed. */
    mode?: 'stream' | 'proxy';
    /** Write the body to this file of the container's file area instead of `data`. */
    outputFile?: string;
    connectionTimeout?: number;
    socketTimeout?: number;
    success?: (result: HttpSuccess) => void;
    error?: (failure: HttpFailure) => void;
  }

  interface HttpSuccess {
    data?: string;
    status?: number;
    headers?: StringMap;
    /** Present in `stream` mode: false per chunk, then true once. */
    done?: boolean;
  }

  interface HttpFailure {
    message: string;
    status?: number;
    content?: string;
    headers?: StringMap;
  }

  /** `context.ml`: present; the calls report that local models are not offered. */
  interface Ml {
    chatCompletions(options: { error?: (e: { message: string }) => void; [key: string]: unknown }): void;
    embeddings(options: { error?: (e: { message: string }) => void; [key: string]: unknown }): void;
  }

  /** The `context` global (also a mimik bundle's first argument). */
  interface Context {
    storage: Storage;
    /** The container env (strings). */
    env: StringMap;
    info: { serviceType: string; apiRoot: string; httpPort: number; nodeId: string };
    /** Queues a frame for the dispatch channel; no argument (or null) flushes. */
    dispatchWebSocketEvent(event?: DispatchEvent | null): void;
    /** An object real mims extend (`Object.assign(context.edge, …)`). */
    edge: { [name: string]: any };
    http: { request(options: HttpRequestOptions): void };
    ml: Ml;
  }

  /** The `app` global of route-style mims. */
  interface App {
    get(path: string, handler: RouteHandler): void;
    post(path: string, handler: RouteHandler): void;
    put(path: string, handler: RouteHandler): void;
    patch(path: string, handler: RouteHandler): void;
    delete(path: string, handler: RouteHandler): void;
    head(path: string, handler: RouteHandler): void;
    options(path: string, handler: RouteHandler): void;
    all(path: string, handler: RouteHandler): void;
  }

  interface Logger {
    info(...args: unknown[]): void;
    warn(...args: unknown[]): void;
    error(...args: unknown[]): void;
    debug(...args: unknown[]): void;
  }

  interface FetchInit {
    method?: string;
    headers?: { [name: string]: string };
    body?: string;
  }

  interface FetchResponse {
    ok: boolean;
    status: number;
    statusText: string;
    headers: { get(name: string): string | null };
    text(): Promise<string>;
    json(): Promise<any>;
  }

  /** `/lib/xp/websocket` (see lib/xp/websocket.d.ts). */
  interface WebSocketLib {
    send(id: string, text: string): boolean;
    sendToGroup(group: string, text: string): void;
    sendToAll(text: string): void;
    addToGroup(group: string, id: string): void;
    removeFromGroup(group: string, id: string): void;
    getGroupSize(group: string): number;
    getGroupMembers(group: string): string[];
    close(id: string, code?: number, reason?: string): void;
    setClientId(id: string, clientId: string): void;
  }

  /** An outbound client of `sdk/net`'s `websockets.createWebsocket`. */
  interface WebsocketClient {
    id: string;
    uri: string;
    handler: string;
    send(text: string): void;
    close(): void;
  }

  /** `sdk/net`'s `websockets` (Dirigible). */
  interface Websockets {
    createWebsocket(uri: string, handler: string, engine?: string): WebsocketClient;
    getClients(): { id: string; uri: string; handler: string }[];
    getClient(id: string): WebsocketClient | null;
    getClientByHandler(handler: string): WebsocketClient | null;
    getMessage(): string | null;
    getError(): string | null;
    getMethod(): 'onopen' | 'onmessage' | 'onerror' | 'onclose' | null;
    isOnOpen(): boolean;
    isOnMessage(): boolean;
    isOnError(): boolean;
    isOnClose(): boolean;
  }
}

declare var app: Mimhost.App;
declare var context: Mimhost.Context;
declare var mimikModule: { exports?: Mimhost.MimikHandler };
declare var log: Mimhost.Logger;
declare var console: Mimhost.Logger & { log(...args: unknown[]): void; dir(...args: unknown[]): void; trace(...args: unknown[]): void };
declare function fetch(url: string, init?: Mimhost.FetchInit): Promise<Mimhost.FetchResponse>;
declare function setTimeout(callback: (...args: any[]) => void, ms?: number, ...args: any[]): number;
declare function setInterval(callback: (...args: any[]) => void, ms?: number, ...args: any[]): number;
declare function setImmediate(callback: (...args: any[]) => void, ...args: any[]): number;
declare function clearTimeout(id?: number): void;
declare function clearInterval(id?: number): void;
declare function clearImmediate(id?: number): void;
declare function queueMicrotask(callback: () => void): void;
declare function atob(data: string): string;
declare function btoa(data: string): string;
declare var process: { env: Mimhost.StringMap; nextTick(fn: (...args: any[]) => void, ...args: any[]): void; platform: string; version: string };
declare var global: typeof globalThis;
declare var self: typeof globalThis;
declare class TextEncoder { encode(text?: string): Uint8Array; }
declare class TextDecoder { constructor(label?: string); decode(bytes?: Uint8Array): string; }
declare class URLSearchParams {
  constructor(init?: string);
  get(name: string): string | null; getAll(name: string): string[]; has(name: string): boolean;
  set(name: string, value: string): void; append(name: string, value: string): void; delete(name: string): void;
  forEach(fn: (value: string, name: string) => void): void; toString(): string;
}
declare class URL {
  constructor(url: string, base?: string);
  href: string; origin: string; protocol: string; host: string; hostname: string; port: string;
  pathname: string; search: string; hash: string; username: string; password: string;
  searchParams: URLSearchParams;
}
declare var Buffer: { byteLength(text: string): number; from(text: string, encoding?: 'utf8' | 'base64'): Uint8Array; isBuffer(value: unknown): false };

declare module 'sdk/net' {
  export const websockets: Mimhost.Websockets;
}

declare module '@cryb/mesa' {
  /** A Mesa message: sent as the frame `{"op":op,"d":d,"t":t}`. */
  export class Message {
    constructor(op: number, d?: unknown, t?: string);
    op: number;
    d: unknown;
    t?: string;
  }
  /** Dispatches to client ids (`setClientId`) of the container's Mesa namespace. */
  export class Dispatcher {
    constructor(redis?: string, options?: { namespace?: string; sync?: { enabled?: boolean } });
    /** `recipients` `['*']` means every session; `excluding` is ignored then. */
    dispatch(message: Message, recipients: string[], excluding?: string[]): Promise<void>;
  }
}
