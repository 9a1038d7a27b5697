/// The OpenAPI 3.1 document of the /v1 routes (Routes.swift), served at /v1/openapi.json. Written by
/// hand beside the routes rather than generating them with swift-openapi-generator: the generator's
/// plugin alone added 2 min 47 s to a clean debug build here, on top of Hummingbird, and CI builds from
/// scratch. Tests/Integration/22-api.sh checks that every route it calls is listed here.
enum OpenAPIDocument {
    static let json = #"""
        {
         "openapi": "3.1.0",
         "info": {
          "title": "Tessera API",
          "version": "1",
          "description": "Thin virtual volumes served as raw images in a FUSE mount, by `tessera mount --api HOST:PORT`. Every call but this document needs `Authorization: Bearer TOKEN` (`tessera user add`). Roles: admin (everything), domain-admin (everything inside its domain), operator (volumes and snapshots inside its domain; no deletes, no settings), auditor (reads only)."
         },
         "security": [{"bearer": []}],
         "paths": {
          "/v1/openapi.json": {
           "get": {
            "operationId": "getOpenAPI",
            "summary": "This document (no token needed)",
            "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}},
            "security": []
           }
          },
          "/v1/status": {
           "get": {
            "operationId": "getStatus",
            "summary": "The mount's status (admin, auditor)",
            "responses": {"200": {"description": "Status", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}}}, "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"}}
           }
          },
          "/v1/volumes": {
           "get": {
            "operationId": "listVolumes",
            "summary": "Volumes of one domain",
            "responses": {"200": {"description": "Volumes", "content": {"application/json": {"schema": {"type": "object", "required": ["volumes"], "properties": {"volumes": {"type": "array", "items": {"$ref": "#/components/schemas/Volume"}}}}}}}, "401": {"$ref": "#/components/responses/Unauthorized"}, "404": {"$ref": "#/components/responses/NotFound"}},
            "parameters": [{"$ref": "#/components/parameters/domain"}]
           },
           "post": {
            "operationId": "createVolume",
            "summary": "Create a thin volume (MOUNT/VOL.img, or MOUNT/D/VOL.img in domain D)",
            "responses": {"201": {"description": "Created", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Volume"}}}}, "400": {"$ref": "#/components/responses/BadInput"}, "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"}, "404": {"$ref": "#/components/responses/NotFound"}, "409": {"$ref": "#/components/responses/Conflict"}, "413": {"$ref": "#/components/responses/TooLarge"}, "507": {"$ref": "#/components/responses/NoSpace"}},
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["name", "size"], "properties": {"name": {"type": "string"}, "size": {"$ref": "#/components/schemas/Size"}, "pool": {"type": "string"}, "domain": {"type": "string"}}}}}}
           }
          },
          "/v1/volumes/{name}": {
           "get": {
            "operationId": "showVolume",
            "summary": "One volume",
            "responses": {"200": {"description": "Volume", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Volume"}}}}, "401": {"$ref": "#/components/responses/Unauthorized"}, "404": {"$ref": "#/components/responses/NotFound"}},
            "parameters": [{"$ref": "#/components/parameters/name"}, {"$ref": "#/components/parameters/domain"}]
           },
           "delete": {
            "operationId": "deleteVolume",
            "summary": "Delete a volume (admin, domain-admin); refused while open or held by snapshots",
            "responses": {"204": {"description": "Deleted"}, "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"}, "404": {"$ref": "#/components/responses/NotFound"}, "409": {"$ref": "#/components/responses/Conflict"}},
            "parameters": [{"$ref": "#/components/parameters/name"}, {"$ref": "#/components/parameters/domain"}, {"name": "withSnapshots", "in": "query", "required": false, "schema": {"type": "boolean"}}]
           }
          },
          "/v1/volumes/{name}/resize": {
           "post": {
            "operationId": "resizeVolume",
            "summary": "Grow a volume (shrinking needs shrink: true and an admin or domain-admin)",
            "responses": {"200": {"description": "Resized", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Volume"}}}}, "400": {"$ref": "#/components/responses/BadInput"}, "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"}, "404": {"$ref": "#/components/responses/NotFound"}, "409": {"$ref": "#/components/responses/Conflict"}, "413": {"$ref": "#/components/responses/TooLarge"}},
            "parameters": [{"$ref": "#/components/parameters/name"}],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["size"], "properties": {"size": {"$ref": "#/components/schemas/Size"}, "shrink": {"type": "boolean"}, "domain": {"type": "string"}}}}}}
           }
          },
          "/v1/snapshots": {
           "get": {
            "operationId": "listSnapshots",
            "summary": "Snapshots of one domain",
            "responses": {"200": {"description": "Snapshots", "content": {"application/json": {"schema": {"type": "object", "required": ["snapshots"], "properties": {"snapshots": {"type": "array", "items": {"$ref": "#/components/schemas/Snapshot"}}}}}}}, "401": {"$ref": "#/components/responses/Unauthorized"}, "404": {"$ref": "#/components/responses/NotFound"}},
            "parameters": [{"$ref": "#/components/parameters/domain"}]
           },
           "post": {
            "operationId": "createSnapshot",
            "summary": "Snapshot volumes at one instant",
            "responses": {"201": {"description": "Created", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Snapshot"}}}}, "400": {"$ref": "#/components/responses/BadInput"}, "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"}, "404": {"$ref": "#/components/responses/NotFound"}, "409": {"$ref": "#/components/responses/Conflict"}, "413": {"$ref": "#/components/responses/TooLarge"}},
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "volumes": {"type": "array", "items": {"type": "string"}}, "all": {"type": "boolean", "description": "Every volume of the domain"}, "domain": {"type": "string"}}}}}}
           }
          },
          "/v1/snapshots/{name}": {
           "delete": {
            "operationId": "deleteSnapshot",
            "summary": "Delete a snapshot (admin, domain-admin)",
            "responses": {"204": {"description": "Deleted"}, "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"}, "404": {"$ref": "#/components/responses/NotFound"}},
            "parameters": [{"$ref": "#/components/parameters/name"}, {"$ref": "#/components/parameters/domain"}]
           }
          },
          "/v1/domains": {
           "get": {
            "operationId": "listDomains",
            "summary": "Domains (a domain-admin or operator sees only its own)",
            "responses": {"200": {"description": "Domains", "content": {"application/json": {"schema": {"type": "object", "required": ["domains"], "properties": {"domains": {"type": "array", "items": {"$ref": "#/components/schemas/Domain"}}}}}}}, "401": {"$ref": "#/components/responses/Unauthorized"}}
           }
          },
          "/v1/domains/{name}": {
           "get": {
            "operationId": "showDomain",
            "summary": "One domain",
            "responses": {"200": {"description": "Domain", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Domain"}}}}, "401": {"$ref": "#/components/responses/Unauthorized"}, "404": {"$ref": "#/components/responses/NotFound"}},
            "parameters": [{"$ref": "#/components/parameters/name"}]
           }
          },
          "/v1/users": {
           "get": {
            "operationId": "listUsers",
            "summary": "Users (admin)",
            "responses": {"200": {"description": "Users", "content": {"application/json": {"schema": {"type": "object", "required": ["users"], "properties": {"users": {"type": "array", "items": {"$ref": "#/components/schemas/User"}}}}}}}, "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"}}
           },
           "post": {
            "operationId": "addUser",
            "summary": "Add a user (admin); its token is in this answer only",
            "responses": {"201": {"description": "Created", "content": {"application/json": {"schema": {"type": "object", "required": ["user", "token"], "properties": {"user": {"$ref": "#/components/schemas/User"}, "token": {"type": "string"}}}}}}, "400": {"$ref": "#/components/responses/BadInput"}, "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"}, "404": {"$ref": "#/components/responses/NotFound"}, "409": {"$ref": "#/components/responses/Conflict"}, "413": {"$ref": "#/components/responses/TooLarge"}},
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["name", "role"], "properties": {"name": {"type": "string"}, "role": {"$ref": "#/components/schemas/Role"}, "domain": {"type": "string"}}}}}}
           }
          },
          "/v1/users/{name}": {
           "delete": {
            "operationId": "removeUser",
            "summary": "Remove a user (admin); its token stops working",
            "responses": {"204": {"description": "Removed"}, "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"}, "404": {"$ref": "#/components/responses/NotFound"}},
            "parameters": [{"$ref": "#/components/parameters/name"}]
           }
          }
         },
         "components": {
          "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
          "parameters": {
           "name": {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}},
           "domain": {
            "name": "domain",
            "in": "query",
            "required": false,
            "schema": {"type": "string"},
            "description": "The domain to act in (default: the caller's domain, else 'default')."
           }
          },
          "responses": {
           "BadInput": {
            "description": "Bad input (a name, size or field that can never work, or malformed JSON)",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
           },
           "Unauthorized": {
            "description": "No valid bearer token",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
           },
           "Forbidden": {
            "description": "The caller's role does not allow it",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
           },
           "NotFound": {
            "description": "Not found, or in a domain the caller may not see",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
           },
           "Conflict": {
            "description": "The name is taken, the object is busy, or a domain quota would be exceeded",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
           },
           "TooLarge": {
            "description": "The body is larger than 64 KiB",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
           },
           "NoSpace": {
            "description": "No room left in the pool",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
           }
          },
          "schemas": {
           "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {"code": {"type": "string", "enum": ["invalid", "unauthorized", "forbidden", "not_found", "exists", "busy", "quota_exceeded", "no_space", "too_large", "catalog", "io", "internal", "method_not_allowed", "http"]}, "message": {"type": "string"}}}}
           },
           "Size": {
            "oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "examples": ["40G"]}],
            "description": "Bytes, or a number with K, M, G or T (powers of 1024)."
           },
           "Role": {"type": "string", "enum": ["admin", "domain-admin", "operator", "auditor"]},
           "Volume": {
            "type": "object",
            "required": ["id", "name", "pool", "size", "allocated"],
            "properties": {"id": {"type": "integer"}, "name": {"type": "string"}, "domain": {"type": "string"}, "pool": {"type": "string"}, "size": {"type": "integer"}, "allocated": {"type": "integer"}, "chunkSize": {"type": "integer"}, "uid": {"type": "integer"}, "gid": {"type": "integer"}, "mode": {"type": "string"}, "open": {"type": "boolean"}, "referenced": {"type": "integer"}, "exclusive": {"type": "integer"}, "heldBySnapshots": {"type": "integer"}, "snapshots": {"type": "integer"}, "parent": {"type": "string"}, "unfolded": {"type": "integer"}}
           },
           "Snapshot": {
            "type": "object",
            "required": ["id", "name", "volumes"],
            "properties": {"id": {"type": "integer"}, "name": {"type": "string"}, "domain": {"type": "string"}, "createdAt": {"type": "number"}, "volumes": {"type": "array", "items": {"type": "string"}}, "sizes": {"type": "array", "items": {"type": "integer"}}, "freeable": {"type": "integer"}, "scheduled": {"type": "boolean"}}
           },
           "Domain": {
            "type": "object",
            "required": ["id", "name"],
            "properties": {"id": {"type": "integer"}, "name": {"type": "string"}, "createdAt": {"type": "number"}, "quotaVolumes": {"type": "integer"}, "quotaSize": {"type": "integer"}, "quotaSnapshots": {"type": "integer"}, "pools": {"type": "array", "items": {"type": "string"}}, "volumes": {"type": "integer"}, "provisioned": {"type": "integer"}, "allocated": {"type": "integer"}, "snapshots": {"type": "integer"}, "schedules": {"type": "integer"}}
           },
           "User": {
            "type": "object",
            "required": ["name", "role", "createdAt"],
            "properties": {"name": {"type": "string"}, "role": {"$ref": "#/components/schemas/Role"}, "domain": {"type": "string"}, "createdAt": {"type": "number"}}
           },
           "Status": {
            "type": "object",
            "required": [],
            "properties": {"dataDirectory": {"type": "string"}, "mounted": {"type": "boolean"}, "mountpoint": {"type": "string"}, "pid": {"type": "integer"}, "pools": {"type": "integer"}, "stores": {"type": "integer"}, "volumes": {"type": "integer"}, "provisioned": {"type": "integer"}, "allocated": {"type": "integer"}, "openImages": {"type": "integer"}},
            "description": "What `tessera status --json` prints."
           }
          }
         }
        }
        """#
}
