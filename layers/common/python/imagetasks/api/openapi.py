"""Completes Powertools' OpenAPI description of the tasks routes into the whole service's: the images
routes (served by another function), query parameters, the X-Auth-Token scheme and the statuses each
route really answers."""

from __future__ import annotations

import copy
from typing import Any

from imagetasks.api.image_schemas import (
    image_schema_document,
    images_schema_document,
    member_schema_document,
    members_schema_document,
)
from imagetasks.config import Settings

NO_TOKEN = {"/", "/versions", "/v2", "/openapi.json", "/console"}
ERROR_REF = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "title", "message"],
            "properties": {
                "code": {"type": "integer"},
                "title": {"type": "string"},
                "message": {"type": "string"},
            },
        }
    },
}
# Statuses each route answers besides its success (authorization errors are added to every route
# that needs a token).
REFUSALS: dict[tuple[str, str], dict[str, str]] = {
    ("/v2/tasks", "get"): {"400": "A parameter is not valid"},
    ("/v2/tasks", "post"): {
        "400": "The body is not a valid task, or the Idempotency-Key header is malformed",
        "403": "A reserved image property (os_glance*)",
        "409": "A request with this Idempotency-Key is still being handled; retry (Retry-After)",
        "413": "The body or its image properties are over a limit",
        "422": "This Idempotency-Key was used with a different request body",
    },
    ("/v2/tasks/{task_id}", "get"): {
        "400": "wait is not a whole number of seconds from 1 to 20",
        "404": "No such task for the caller",
    },
    ("/v2/tasks/{task_id}", "delete"): {"405": "Tasks cannot be deleted; they expire"},
    ("/v2/images", "get"): {"400": "A parameter is not valid"},
    ("/v2/images", "post"): {
        "400": "The body is not a valid image (formats, types, lengths)",
        "403": "A read-only or reserved attribute, or another project as owner",
        "409": "An image with this id already exists",
        "413": "The body is larger than 256 KiB, or has too many tags and extra properties",
    },
    ("/v2/images/{image_id}/import", "post"): {
        "400": "Not a web-download request, or a URI the import filter refuses",
        "403": "Another project's image",
        "404": "No such image for the caller",
        "409": "The image is not queued",
        "413": "The body is larger than 256 KiB",
    },
    ("/v2/images/{image_id}", "get"): {"404": "No such image for the caller"},
    ("/v2/images/{image_id}", "patch"): {
        "400": "Not a valid JSON patch, or a value the image cannot take",
        "403": "A read-only or reserved attribute, removing an image attribute, another project's image, "
        "the owner or public visibility (admins only), formats of an image that is not queued",
        "404": "No such image for the caller",
        "409": "An extra property to replace or remove does not exist, or the image kept changing",
        "413": "Too many extra properties",
        "415": "Not a JSON patch media type (Accept-Patch lists them)",
    },
    ("/v2/images/{image_id}/tags/{tag}", "put"): {
        "400": "The tag is longer than 255 characters, or the image would have too many tags",
        "403": "Another project's image",
        "404": "No such image for the caller",
        "409": "The image kept changing",
    },
    ("/v2/images/{image_id}/tags/{tag}", "delete"): {
        "403": "Another project's image",
        "404": "No such image for the caller, or no such tag on it",
        "409": "The image kept changing",
    },
    ("/v2/images/{image_id}", "delete"): {
        "403": "The image is protected or another project's",
        "404": "No such image for the caller",
    },
    ("/v2/images/{image_id}/file", "get"): {"404": "No such image for the caller"},
    ("/v2/images/{image_id}/tasks", "get"): {"404": "No such image for the caller"},
    ("/v2/images/{image_id}/members", "get"): {
        "403": "The image is not shared",
        "404": "No such image for the caller",
    },
    ("/v2/images/{image_id}/members", "post"): {
        "400": "No member, an empty one or one that is not a string",
        "403": "The image is not shared, or not the caller's",
        "404": "No such image for the caller",
        "409": "The project is a member already, or the members kept changing",
        "413": "The image has as many members as allowed, or the body is larger than 256 KiB",
    },
    ("/v2/images/{image_id}/members/{member_id}", "get"): {
        "404": "No such image or member for the caller (another project's membership is not shown)"
    },
    ("/v2/images/{image_id}/members/{member_id}", "put"): {
        "400": "No status, or not one of pending, accepted, rejected",
        "403": "The image is not shared, or the caller is not that member",
        "404": "No such image or member for the caller",
        "409": "The members kept changing",
        "413": "The body is larger than 256 KiB",
    },
    ("/v2/images/{image_id}/members/{member_id}", "delete"): {
        "403": "The image is not shared, or not the caller's",
        "404": "No such image or member for the caller",
        "409": "The members kept changing",
    },
}


IMAGE_IMPORT_SCHEMA = {
    "type": "object",
    "required": ["method"],
    "properties": {
        "method": {
            "type": "object",
            "required": ["name", "uri"],
            "properties": {
                "name": {"type": "string", "enum": ["web-download"]},
                "uri": {"type": "string", "description": "Where to download the image from"},
            },
        },
        "stores": {"type": "array", "items": {"type": "string", "enum": ["default"]}},
    },
}


IMAGE_PATCH_VALUE = {"description": "The new value (absent for remove)"}
IMAGE_PATCH_SCHEMAS = {
    # Glance's v2.1 patch (JSON-schema draft 10): {"op": ..., "path": ..., "value": ...}
    "application/openstack-images-v2.1-json-patch": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["op", "path"],
            "properties": {
                "op": {"type": "string", "enum": ["add", "remove", "replace"]},
                "path": {"type": "string", "pattern": "^/", "description": "/name, /tags, /<property>..."},
                "value": IMAGE_PATCH_VALUE,
            },
        },
    },
    # Glance's v2.0 patch (draft 4): {"add" | "remove" | "replace": path, "value": ...}
    "application/openstack-images-v2.0-json-patch": {
        "type": "array",
        "items": {
            "type": "object",
            "minProperties": 1,
            "properties": {
                "add": {"type": "string", "pattern": "^/"},
                "remove": {"type": "string", "pattern": "^/"},
                "replace": {"type": "string", "pattern": "^/"},
                "value": IMAGE_PATCH_VALUE,
            },
        },
    },
}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


def task_list_parameters(
    sort_keys: tuple[str, ...], statuses: list[str], types: list[str]
) -> list[dict[str, Any]]:
    return [
        _query("limit", {"type": "integer", "minimum": 0}, "Page size (capped at 1000)"),
        _query("marker", {"type": "string", "format": "uuid"}, "The last task of the previous page"),
        _query("sort_key", {"type": "string", "enum": list(sort_keys)}, "Sort key"),
        _query("sort_dir", {"type": "string", "enum": ["asc", "desc"]}, "Sort direction"),
        _query("status", {"type": "string", "enum": statuses}, "Only tasks in this status"),
        _query("type", {"type": "string", "enum": types}, "Only tasks of this type"),
        _query("id", {"type": "string"}, "Only this task"),
        _query("owner", {"type": "string"}, "Only this project's tasks (admins)"),
    ]


IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]([ -~]*[!-~])?$"},
    "description": (
        "Makes the create safe to retry: the same key and body from the same project within 24 hours "
        "answer the task the first request made (201 again); the same key with another body is a 422."
    ),
}
LONG_POLL_WAIT = _query(
    "wait",
    {"type": "integer", "minimum": 1, "maximum": 20},
    "Long poll: answer as soon as the task's status or progress changes, at the latest after this many "
    "seconds (a finished task at once)",
)


TIME_FILTER = {
    "type": "string",
    "pattern": "^(gt|gte|lt|lte|eq|neq):[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$",
}
IMAGE_LIST_PARAMETERS = [
    _query("limit", {"type": "integer", "minimum": 0}, "Page size (capped at 1000)"),
    _query("marker", {"type": "string", "format": "uuid"}, "The last image of the previous page"),
    _query(
        "sort_key",
        {"type": "string", "enum": ["created_at", "updated_at", "name", "size", "id"]},
        "Sort key (repeated: only with created_at, then id, after it, else a 400)",
    ),
    _query("sort_dir", {"type": "string", "enum": ["asc", "desc"]}, "Sort direction"),
    _query("name", {"type": "string"}, "Name, or in:a,b"),
    _query("status", {"type": "string"}, "Status, or in:a,b"),
    _query("disk_format", {"type": "string"}, "Disk format, or in:a,b"),
    _query("container_format", {"type": "string"}, "Container format, or in:a,b"),
    _query(
        "visibility",
        {"type": "string", "enum": ["public", "private", "shared", "community", "all"]},
        "Visibility",
    ),
    _query("os_hidden", {"type": "boolean"}, "Hidden images only"),
    _query("tag", {"type": "string"}, "Images with this tag"),
    _query("checksum", {"type": "string"}, "Images whose data has this MD5 checksum (exact match)"),
    _query("os_hash_value", {"type": "string"}, "Images whose data has this os_hash_value (exact match)"),
    _query("owner", {"type": "string"}, "Images of this project (admins: any; members: its public ones)"),
    _query("size_min", {"type": "integer", "minimum": 0}, "Images of at least this many bytes"),
    _query("size_max", {"type": "integer", "minimum": 0}, "Images of at most this many bytes"),
    _query("created_at", TIME_FILTER, "Created before or after a time, e.g. gt:2026-01-01T00:00:00Z"),
    _query("updated_at", TIME_FILTER, "Updated before or after a time, e.g. lte:2026-01-01T00:00:00Z"),
    _query("id", {"type": "string"}, "Only this image, or these: in:<id>,<id> (at most 100)"),
    _query("protected", {"type": "boolean"}, "Protected images only, or unprotected only"),
    _query(
        "member_status",
        {"type": "string", "enum": ["accepted", "pending", "rejected", "all"]},
        "Accepted and ignored (no member API)",
    ),
    _query(
        "sort",
        {"type": "string", "pattern": "^(created_at|updated_at|name|size|id)(:(asc|desc))?$"},
        "key[:dir]: one key (Glance's newer form of sort_key and sort_dir); further keys only as "
        "Glance's own tie-breakers (created_at, then id, in the same direction), else a 400",
    ),
]
IMAGE_LIST_DESCRIPTION = (
    "Glance's filters; any other query parameter filters on the extra property of that name "
    "(e.g. os_distro=ubuntu, what glance image-list --property-filter sends)."
)


def images_paths() -> dict[str, Any]:
    ok = {"description": "OK"}
    return {
        "/v2/images": {
            "get": {
                "summary": "List images",
                "description": IMAGE_LIST_DESCRIPTION,
                "parameters": IMAGE_LIST_PARAMETERS,
                "responses": {"200": {"description": "A page of images", "content": _json("Images")}},
            },
            "post": {
                "summary": "Create a queued image (no data: fill it with POST /v2/images/{image_id}/import)",
                "requestBody": {"required": True, "content": _json("JsonObject")},
                "responses": {"201": {"description": "The new image, queued", "content": _json("Image")}},
            },
        },
        "/v2/images/{image_id}/import": {
            "parameters": [_path("image_id")],
            "post": {
                "summary": "Import data into a queued image (web-download: from a URL, as an import task)",
                "requestBody": {"required": True, "content": _json("ImageImport")},
                "responses": {"202": {"description": "The import task was created; the image is importing"}},
            },
        },
        "/v2/info/import": {
            "get": {
                "summary": "The interoperable import methods this cloud offers",
                "responses": {"200": {**ok, "content": _json("JsonObject")}},
            }
        },
        "/v2/info/stores": {
            "get": {
                "summary": "The stores image data is kept in (one: the images bucket)",
                "responses": {"200": {**ok, "content": _json("JsonObject")}},
            }
        },
        "/v2/images/{image_id}": {
            "parameters": [_path("image_id")],
            "get": {"summary": "Show an image", "responses": {"200": {**ok, "content": _json("Image")}}},
            "patch": {
                "summary": "Update an image (Glance's JSON patch)",
                "requestBody": {
                    "required": True,
                    "content": {media: {"schema": schema} for media, schema in IMAGE_PATCH_SCHEMAS.items()},
                },
                "responses": {"200": {"description": "The image as changed", "content": _json("Image")}},
            },
            "delete": {
                "summary": "Delete an image and its data",
                "responses": {"204": {"description": "Deleted"}},
            },
        },
        "/v2/images/{image_id}/tags/{tag}": {
            "parameters": [_path("image_id"), _path("tag")],
            "put": {"summary": "Add a tag to an image", "responses": {"204": {"description": "Tagged"}}},
            "delete": {
                "summary": "Remove a tag from an image",
                "responses": {"204": {"description": "Untagged"}},
            },
        },
        "/v2/images/{image_id}/file": {
            "parameters": [_path("image_id")],
            "get": {
                "summary": "Download the image data",
                "responses": {
                    "302": {"description": "Redirect to a time-limited download URL"},
                    "204": {"description": "The image has no data yet (queued or importing)"},
                },
            },
        },
        "/v2/images/{image_id}/tasks": {
            "parameters": [_path("image_id")],
            "get": {
                "summary": "The tasks that worked on an image",
                "responses": {
                    "200": {
                        "description": "The tasks",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["tasks"],
                                    "properties": {"tasks": {"type": "array", "items": {"type": "object"}}},
                                }
                            }
                        },
                    }
                },
            },
        },
        "/v2/images/{image_id}/members": {
            "parameters": [_path("image_id")],
            "get": {
                "summary": "List an image's members (the owner: all; a member: itself)",
                "responses": {"200": {"description": "The members", "content": _json("Members")}},
            },
            "post": {
                "summary": "Share an image with a project (the owner, of a shared image)",
                "requestBody": {"required": True, "content": _json("MemberCreate")},
                "responses": {"200": {"description": "The new member, pending", "content": _json("Member")}},
            },
        },
        "/v2/images/{image_id}/members/{member_id}": {
            "parameters": [_path("image_id"), _path("member_id")],
            "get": {
                "summary": "Show one member of an image",
                "responses": {"200": {**ok, "content": _json("Member")}},
            },
            "put": {
                "summary": "Accept, reject or reset a sharing (the member)",
                "requestBody": {"required": True, "content": _json("MemberUpdate")},
                "responses": {"200": {"description": "The member as changed", "content": _json("Member")}},
            },
            "delete": {
                "summary": "Stop sharing an image with a project (the owner)",
                "responses": {"204": {"description": "Removed"}},
            },
        },
        "/v2/schemas/member": {
            "get": {
                "summary": "The image member schema",
                "responses": {"200": {**ok, "content": _json("JsonObject")}},
            }
        },
        "/v2/schemas/members": {
            "get": {
                "summary": "The image member list schema",
                "responses": {"200": {**ok, "content": _json("JsonObject")}},
            }
        },
        "/v2/schemas/image": {
            "get": {
                "summary": "The image schema",
                "responses": {"200": {**ok, "content": _json("JsonObject")}},
            }
        },
        "/v2/schemas/images": {
            "get": {
                "summary": "The image list schema",
                "responses": {"200": {**ok, "content": _json("JsonObject")}},
            }
        },
    }


def complete(
    document: dict[str, Any], settings: Settings, task_list_params: list[dict[str, Any]]
) -> dict[str, Any]:
    """`document` (Powertools' tasks routes, with the task schemas in components) made whole."""
    document = copy.deepcopy(document)
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.update(
        {
            "Error": ERROR_SCHEMA,
            "Image": {**image_schema_document(settings), "type": "object"},
            "Images": {**images_schema_document(settings), "type": "object"},
            "JsonObject": {"type": "object"},
            "ImageImport": IMAGE_IMPORT_SCHEMA,
            "Member": {**member_schema_document(), "type": "object"},
            "Members": {**members_schema_document(), "type": "object"},
            "MemberCreate": {
                "type": "object",
                "required": ["member"],
                "properties": {"member": {"type": "string", "minLength": 1, "maxLength": 255}},
                "additionalProperties": False,
            },
            "MemberUpdate": {
                "type": "object",
                "required": ["status"],
                "properties": {"status": {"type": "string", "enum": ["pending", "accepted", "rejected"]}},
                "additionalProperties": False,
            },
        }
    )
    components["securitySchemes"] = {
        "X-Auth-Token": {
            "type": "apiKey",
            "in": "header",
            "name": "X-Auth-Token",
            "description": "A Keystone token",
        }
    }
    document["security"] = [{"X-Auth-Token": []}]
    paths = document.setdefault("paths", {})
    paths.update(images_paths())
    paths["/v2/tasks"]["get"]["parameters"] = task_list_parameters_or(
        paths["/v2/tasks"]["get"], task_list_params
    )
    paths["/v2/tasks"]["post"]["parameters"] = task_list_parameters_or(
        paths["/v2/tasks"]["post"], [IDEMPOTENCY_KEY]
    )
    paths["/v2/tasks/{task_id}"]["get"]["parameters"] = task_list_parameters_or(
        paths["/v2/tasks/{task_id}"]["get"], [LONG_POLL_WAIT]
    )
    for path, operations in paths.items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            responses = operation.setdefault("responses", {})
            refusals = REFUSALS.get((path, method), {})
            if "405" in refusals:
                responses.clear()
            for status, description in refusals.items():
                responses[status] = {"description": description, "content": ERROR_REF}
            if path in NO_TOKEN:
                operation["security"] = []
            else:
                responses["401"] = {"description": "No token, or a token that is not valid"}
                responses["403"] = responses.get("403") or {"description": "The token may not do this"}
    return document


def task_list_parameters_or(
    operation: dict[str, Any], parameters: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    given = {p["name"] for p in operation.get("parameters", [])}
    return [*operation.get("parameters", []), *(p for p in parameters if p["name"] not in given)]


def task_create_schema(settings: Settings) -> dict[str, Any]:
    """The create body, one shape per task type, refusing what the service refuses before it looks at
    anything outside the request (the import filter's DNS answers, the image a convert names)."""
    from imagetasks.domain.conversion import TARGET_FORMATS  # the formats qemu-img can write

    disk_formats = {"type": "string", "enum": list(settings.allowed_disk_formats)}
    targets = {"type": "string", "enum": [f for f in TARGET_FORMATS if f in settings.allowed_disk_formats]}
    containers = {"type": "string", "enum": list(settings.allowed_container_formats)}
    image_id = {"type": "string", "minLength": 1}
    schemes = sorted({*settings.import_allowed_schemes, "s3"})
    import_input = {
        "type": "object",
        "required": ["import_from", "import_from_format", "image_properties"],
        "properties": {
            "import_from": {"type": "string", "pattern": f"^({'|'.join(schemes)})://[^/?#\\s]+"},
            "import_from_format": disk_formats,
            "image_properties": {
                "type": "object",
                "required": ["disk_format", "container_format"],
                "maxProperties": 128 + 2,
                "properties": {
                    "name": {"type": "string", "maxLength": 255},
                    "disk_format": disk_formats,
                    "container_format": containers,
                },
            },
            "checksum": {"type": "string", "pattern": "^[0-9a-fA-F]{32}$"},
            "os_hash_value": {"type": "string", "pattern": "^[0-9a-fA-F]{128}$"},
        },
    }
    convert_input = {
        "type": "object",
        "additionalProperties": False,
        "required": ["image_id", "disk_format"],
        "properties": {
            "image_id": image_id,
            "disk_format": targets,
            "container_format": containers,
            "name": {"type": "string", "maxLength": 255},
        },
    }
    export_input = {
        "type": "object",
        "additionalProperties": False,
        "required": ["image_id"],
        "properties": {"image_id": image_id, "disk_format": {"type": "string"}},
    }
    by_type = {"import": import_input, "convert": convert_input, "export": export_input}
    return {
        "oneOf": [
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["type", "input"],
                "properties": {"type": {"type": "string", "enum": [name]}, "input": shape},
            }
            for name, shape in by_type.items()
        ]
    }
