use channels::consumer;

/// Not `Clone`: every connection gets a clone of the app's value.
struct Pool;

#[consumer(websocket)]
struct Chat {
    #[state]
    pool: Pool,
}

#[consumer]
impl Chat {}

fn main() {}
