//! The OpenAPI document's frame: title, tags and the bearer scheme. Paths
//! and schemas come from the `#[utoipa::path]` annotations on each handler.

use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "flashsale",
        description = "High-concurrency flash-sale purchase engine. Errors always answer \
            `{\"error\": {\"code\", \"message\", \"request_id\"}}`; 503 answers carry Retry-After.",
    ),
    modifiers(&BearerAuth),
    components(schemas(
        super::ErrorBody,
        crate::live::SaleEvent,
        crate::live::PurchaseEvent,
        crate::live::OrderEvent
    )),
    tags(
        (name = "auth", description = "Development identity"),
        (name = "sale", description = "What shoppers read"),
        (name = "purchase", description = "Buying: attempt, status, orders"),
        (name = "payments", description = "The payment provider's signed webhook (checkout holds)"),
        (name = "admin", description = "Products and flash sales (admin role)"),
        (name = "operations", description = "Probes and metrics"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("Token from POST /api/auth/login"))
                    .build(),
            ),
        );
    }
}
