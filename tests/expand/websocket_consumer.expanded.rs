use channels::consumer;
use channels::prelude::*;
pub struct Room {
    /// The connection's scope (added by `#[consumer]`).
    pub scope: ::channels::Scope,
    name: String,
    seat: Option<u32>,
    count: usize,
    history: Vec<String>,
}
#[doc(hidden)]
#[allow(non_upper_case_globals, unused_qualifications)]
const _: () = {
    #[automatically_derived]
    impl ::channels::__private::FromScope for Room {
        fn from_scope(
            scope: ::channels::__private::Scope,
        ) -> ::core::result::Result<Self, ::channels::__private::ConsumerError> {
            ::core::result::Result::Ok(Self {
                name: ::channels::__private::url_param(&scope, "name")?,
                seat: ::channels::__private::optional_url_param(&scope, "n")?,
                count: <usize as ::core::default::Default>::default(),
                history: Vec::with_capacity(8),
                scope,
            })
        }
    }
    #[automatically_derived]
    impl ::channels::__private::Consumer for Room {
        const PROTOCOL: &'static str = "websocket";
        const URL_PARAMS: &'static [&'static str] = &["name"];
        type App = ::channels::__private::ConsumerApp<Self>;
        fn app() -> Self::App {
            ::channels::__private::ConsumerApp::websocket(
                <Self as ::channels::__private::FromScope>::from_scope,
            )
        }
    }
};
impl Room {
    async fn connect(&mut self, ws: &mut Websocket) -> Result<(), ConsumerError> {
        ws.accept().await?;
        Ok(())
    }
    async fn receive(
        &mut self,
        ws: &mut Websocket,
        message: Message,
    ) -> Result<(), ConsumerError> {
        self.history.push(self.name.clone());
        ws.send(message).await?;
        Ok(())
    }
    async fn disconnect(&mut self, _code: u16) {}
}
#[doc(hidden)]
#[allow(non_upper_case_globals, unused_qualifications)]
const _: () = {
    #[automatically_derived]
    impl ::channels::__private::WebsocketConsumer for Room {
        const RECEIVES_CHANNEL_MESSAGES: bool = false;
        async fn connect(
            &mut self,
            ws: &mut ::channels::__private::Websocket,
        ) -> ::core::result::Result<(), ::channels::__private::ConsumerError> {
            ::channels::__private::IntoConsumerResult::into_consumer_result(
                <Room>::connect(self, ws).await,
            )
        }
        async fn receive(
            &mut self,
            ws: &mut ::channels::__private::Websocket,
            message: ::channels::__private::Message,
        ) -> ::core::result::Result<(), ::channels::__private::ConsumerError> {
            ::channels::__private::IntoConsumerResult::into_consumer_result(
                <Room>::receive(self, ws, message).await,
            )
        }
        async fn disconnect(
            &mut self,
            code: u16,
        ) -> ::core::result::Result<(), ::channels::__private::ConsumerError> {
            ::channels::__private::IntoConsumerResult::into_consumer_result(
                <Room>::disconnect(self, code).await,
            )
        }
    }
};
fn main() {}
