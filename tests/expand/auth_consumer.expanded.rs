use channels::prelude::*;
use channels::{auth, consumer};
pub struct Private {
    /// The connection's scope (added by `#[consumer]`).
    pub scope: ::channels::Scope,
}
#[doc(hidden)]
#[allow(non_upper_case_globals, unused_qualifications)]
const _: () = {
    #[automatically_derived]
    impl ::channels::__private::FromScope for Private {
        fn from_scope(
            scope: ::channels::__private::Scope,
        ) -> ::core::result::Result<Self, ::channels::__private::ConsumerError> {
            ::channels::__private::require_user(&scope, "Private")?;
            ::core::result::Result::Ok(Self { scope })
        }
    }
    #[automatically_derived]
    impl ::channels::__private::Consumer for Private {
        const PROTOCOL: &'static str = "websocket";
        const URL_PARAMS: &'static [&'static str] = &[];
        type App = ::channels::__private::Wrapped<
            ::channels::__private::AuthMiddlewareStack,
            ::channels::__private::ConsumerApp<Self>,
        >;
        fn app() -> Self::App {
            ::channels::__private::Middleware::wrap(
                ::channels::__private::AuthMiddlewareStack::new().required(),
                ::channels::__private::ConsumerApp::websocket(
                    <Self as ::channels::__private::FromScope>::from_scope,
                ),
            )
        }
    }
};
impl Private {
    async fn connect(&mut self, ws: &mut Websocket) -> Result<(), ConsumerError> {
        ws.accept().await?;
        Ok(())
    }
}
#[doc(hidden)]
#[allow(non_upper_case_globals, unused_qualifications)]
const _: () = {
    #[automatically_derived]
    impl ::channels::__private::WebsocketConsumer for Private {
        const RECEIVES_CHANNEL_MESSAGES: bool = false;
        async fn connect(
            &mut self,
            ws: &mut ::channels::__private::Websocket,
        ) -> ::core::result::Result<(), ::channels::__private::ConsumerError> {
            ::channels::__private::IntoConsumerResult::into_consumer_result(
                <Private>::connect(self, ws).await,
            )
        }
    }
};
fn main() {}
