use channels::prelude::*;
use channels::{consumer, routing};
pub struct Room {
    /// The connection's scope (added by `#[consumer]`).
    pub scope: ::channels::Scope,
    name: String,
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
impl Room {}
#[doc(hidden)]
#[allow(non_upper_case_globals, unused_qualifications)]
const _: () = {
    #[automatically_derived]
    impl ::channels::__private::WebsocketConsumer for Room {
        const RECEIVES_CHANNEL_MESSAGES: bool = false;
    }
};
pub struct Lobby {
    /// The connection's scope (added by `#[consumer]`).
    pub scope: ::channels::Scope,
}
#[doc(hidden)]
#[allow(non_upper_case_globals, unused_qualifications)]
const _: () = {
    #[automatically_derived]
    impl ::channels::__private::FromScope for Lobby {
        fn from_scope(
            scope: ::channels::__private::Scope,
        ) -> ::core::result::Result<Self, ::channels::__private::ConsumerError> {
            ::core::result::Result::Ok(Self { scope })
        }
    }
    #[automatically_derived]
    impl ::channels::__private::Consumer for Lobby {
        const PROTOCOL: &'static str = "websocket";
        const URL_PARAMS: &'static [&'static str] = &[];
        type App = ::channels::__private::ConsumerApp<Self>;
        fn app() -> Self::App {
            ::channels::__private::ConsumerApp::websocket(
                <Self as ::channels::__private::FromScope>::from_scope,
            )
        }
    }
};
impl Lobby {}
#[doc(hidden)]
#[allow(non_upper_case_globals, unused_qualifications)]
const _: () = {
    #[automatically_derived]
    impl ::channels::__private::WebsocketConsumer for Lobby {
        const RECEIVES_CHANNEL_MESSAGES: bool = false;
    }
};
fn main() {
    let _app = {
        const _: () = if let ::core::option::Option::Some(failure) = ::channels::__private::check_protocol(
            "Room",
            <Room as ::channels::__private::Consumer>::PROTOCOL,
            "websocket",
        ) {
            {
                ::core::panicking::panic_display(&failure.as_str());
            }
        };
        const _: () = if let ::core::option::Option::Some(failure) = ::channels::__private::check_url_params(
            "Room",
            <Room as ::channels::__private::Consumer>::URL_PARAMS,
            "^rooms/(?P<name>\\w+)/$",
            &["name"],
        ) {
            {
                ::core::panicking::panic_display(&failure.as_str());
            }
        };
        const _: () = if let ::core::option::Option::Some(failure) = ::channels::__private::check_protocol(
            "Lobby",
            <Lobby as ::channels::__private::Consumer>::PROTOCOL,
            "websocket",
        ) {
            {
                ::core::panicking::panic_display(&failure.as_str());
            }
        };
        const _: () = if let ::core::option::Option::Some(failure) = ::channels::__private::check_url_params(
            "Lobby",
            <Lobby as ::channels::__private::Consumer>::URL_PARAMS,
            "lobby/",
            &[],
        ) {
            {
                ::core::panicking::panic_display(&failure.as_str());
            }
        };
        ::channels::__private::ProtocolTypeRouter::new()
            .websocket(
                ::channels::__private::URLRouter::new([
                    ::channels::__private::nest(
                        "ws/",
                        ::channels::__private::URLRouter::new([
                            ::channels::__private::re_path(
                                r"^rooms/(?P<name>\w+)/$",
                                <Room as ::channels::__private::Consumer>::app(),
                            ),
                            ::channels::__private::path(
                                "lobby/",
                                <Lobby as ::channels::__private::Consumer>::app(),
                            ),
                        ]),
                    ),
                    ::channels::__private::path(
                        "raw/",
                        ConsumerApp::websocket(|_scope| Ok(Lobby { scope: _scope })),
                    ),
                ]),
            )
    };
}
