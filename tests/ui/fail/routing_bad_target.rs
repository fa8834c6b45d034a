use channels::routing;

fn main() {
    let _app = routing! {
        websocket: [
            "ws/echo/" => 42,
        ],
    };
}
