use channels::{consumer, routing};

#[consumer(websocket)]
struct Chat {}

#[consumer]
impl Chat {}

fn main() {
    let _app = routing! {
        websocket: [ "ws/chat/" => Chat ],
        websocket: [ "ws/other/" => Chat ],
    };
}
