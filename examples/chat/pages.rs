//! The chat's two HTML pages.

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}\
    #log{border:1px solid #ccc;height:20rem;overflow:auto;padding:.5rem;white-space:pre-wrap}\
    .error{color:#b00}";

/// The login form, with an error after a failed attempt.
pub fn login(error: Option<&str>) -> String {
    let error = error.map(|error| format!("<p class=\"error\" id=\"error\">{}</p>", escape(error))).unwrap_or_default();
    format!(
        "<!doctype html><meta charset=\"utf-8\"><title>Log in · channels chat</title><style>{STYLE}</style>\
         <h1>channels chat</h1>{error}\
         <form method=\"post\" id=\"login\">\
         <p><label>Username <input name=\"username\" id=\"username\" autofocus></label></p>\
         <p><label>Password <input name=\"password\" id=\"password\" type=\"password\"></label></p>\
         <p><button type=\"submit\">Log in</button></p></form>"
    )
}

/// The chat page for `room`, as `user`: the JavaScript client (served at `/static/channels.js`)
/// reconnects with backoff, catches up on what it missed (a notice when it cannot), and shows
/// who is online.
pub fn chat(room: &str, user: &str) -> String {
    let (room, user) = (escape(room), escape(user));
    format!(
        "<!doctype html><meta charset=\"utf-8\"><title>#{room} · channels chat</title><style>{STYLE}</style>\
         <h1>#{room}</h1><p>Logged in as <b id=\"user\">{user}</b>.\
         <form method=\"post\" action=\"/logout/\" style=\"display:inline\"><button>Log out</button></form></p>\
         <p>Online: <span id=\"online\"></span></p>\
         <div id=\"log\"></div>\
         <form id=\"send\"><input id=\"message\" autocomplete=\"off\" size=\"50\"> <button>Send</button></form>\
         <p id=\"status\">connecting…</p>\
         <script type=\"module\">\
         import {{ Socket }} from '/static/channels.js';\
         const log = document.getElementById('log');\
         const status = document.getElementById('status');\
         const online = document.getElementById('online');\
         const socket = new Socket('/ws/chat/{room}/', {{ presence: true }});\
         window.chatSocket = socket;\
         const names = {{ open: 'connected', connecting: 'connecting…', reconnecting: 'reconnecting…' }};\
         socket.on('status', (state) => {{ if (names[state]) status.textContent = names[state]; }});\
         socket.on('close', (event) => {{ if (socket.status === 'closed') status.textContent = 'closed ' + event.code; }});\
         const add = (className, text) => {{\
           const line = document.createElement('div');\
           line.className = className;\
           line.textContent = text;\
           log.appendChild(line);\
           log.scrollTop = log.scrollHeight;\
         }};\
         socket.on('message', (data) => add('line', data.user + ': ' + data.message));\
         socket.on('notrecovered', () => add('notice', '(some messages could not be recovered)'));\
         socket.on('presence', (state) => {{ online.textContent = Object.keys(state).sort().join(', '); }});\
         document.getElementById('send').onsubmit = (event) => {{\
           event.preventDefault();\
           const input = document.getElementById('message');\
           if (input.value) socket.send({{message: input.value}});\
           input.value = '';\
         }};\
         </script>"
    )
}
