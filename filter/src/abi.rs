//! The proxy-wasm callbacks, through the SDK's dispatcher (variant (a) of issue 15, measured
//! against the filter's own exports): the SDK owns the exports and the per-request contexts;
//! scripts/build.sh removes the callbacks the filter does not implement with wasm-metadce.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

use crate::request;
use crate::root::{Root, Shared};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|context_id| Box::new(RootAdapter(Root::new(context_id))));
}}

/// A root context as the SDK sees it.
struct RootAdapter(Root);

impl Context for RootAdapter {
    fn on_http_call_response(&mut self, token_id: u32, num_headers: usize, _: usize, _: usize) {
        self.0.on_http_call_response(token_id, num_headers)
    }
}

impl RootContext for RootAdapter {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        self.0.on_configure()
    }

    fn on_tick(&mut self) {
        self.0.on_tick()
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let shared = self.0.shared().cloned().unwrap_or_else(|| Rc::new(Shared::unconfigured()));
        Some(Box::new(RequestAdapter { context_id, shared }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// A request context as the SDK sees it.
struct RequestAdapter {
    context_id: u32,
    shared: Rc<Shared>,
}

impl Context for RequestAdapter {}

impl HttpContext for RequestAdapter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        request::on_request_headers(self.context_id, &self.shared)
    }
}
