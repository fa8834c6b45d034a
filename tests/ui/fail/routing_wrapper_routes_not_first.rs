use channels::{consumer, routing};

#[consumer(websocket)]
struct Echo;

#[consumer]
impl Echo {}

fn main() {
    let hosts = vec!["example.com".to_owned()];
    let _app = routing! {
        websocket: channels::middleware::AllowedHostsOriginValidator(hosts, [
            "ws/echo/" => Echo,
        ]),
    };
}
