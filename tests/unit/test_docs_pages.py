"""/docs and /redoc work on a network without the internet: every script, style and icon they load, and the
document they render, is served by the app itself."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.api.docs_pages import ASSETS_PATH
from service.core.settings import Settings

# src="...", href="...", url: '...' and the like: every URL a page names.
URL = re.compile(r"""(?:src|href|url|spec-url)\s*[=:]\s*["']([^"']+)["']""")


@pytest.fixture(scope="module")
def client() -> TestClient:
    # No Redis: the pages, their assets and /openapi.json read nothing from it.
    return TestClient(create_app(Settings(redis_url="redis://127.0.0.1:1/0", auth="off")))


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_a_docs_page_loads_only_the_apps_own_urls_and_each_answers(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    urls = URL.findall(response.text)
    assert "/openapi.json" in urls
    assert any(url.startswith(ASSETS_PATH) and url.endswith(".js") for url in urls), urls
    assert "://" not in response.text, "no URL of another host (a CDN, fonts, a validator)"
    for url in urls:
        assert url.startswith("/"), url
        assert client.get(url).status_code == 200, url


def test_swagger_ui_does_not_send_the_document_to_a_validator(client: TestClient) -> None:
    assert '"validatorUrl": null' in client.get("/docs").text


def test_the_assets_are_the_real_scripts(client: TestClient) -> None:
    swagger = client.get(f"{ASSETS_PATH}/swagger-ui-bundle.js")
    assert "SwaggerUIBundle" in swagger.text[:200_000]
    assert swagger.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert "Redoc" in client.get(f"{ASSETS_PATH}/redoc.standalone.js").text[:200_000]
    assert client.get(f"{ASSETS_PATH}/swagger-ui.css").headers["content-type"].startswith("text/css")
    assert client.get(f"{ASSETS_PATH}/nothing.js").status_code == 404
