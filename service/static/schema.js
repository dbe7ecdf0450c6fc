// The API reference page (/schema): Swagger UI over the served OpenAPI document. A file of its
// own because the page's Content-Security-Policy allows no inline script.
"use strict";

SwaggerUIBundle({
  url: "/schema/openapi.json",
  dom_id: "#docs",
  validatorUrl: null, // else the page would load a badge from swagger.io
});
