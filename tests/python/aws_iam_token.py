"""ElastiCache IAM auth tokens made by botocore's RequestSigner, the way
AWS's documentation generates them, at a frozen time with fixed
credentials; tests/it/health.rs compares them with the proxy's, byte for
byte. Usage: aws_iam_token.py CLUSTER USER REGION SERVERLESS(0|1)
UNIX_TIME ACCESS_KEY SECRET_KEY [SESSION_TOKEN]"""
import datetime
import sys
from unittest import mock
from urllib.parse import ParseResult, urlencode, urlunparse

import botocore.auth
import botocore.session
from botocore.credentials import Credentials
from botocore.model import ServiceId
from botocore.signers import RequestSigner


def token(cluster, user, region, serverless, creds, at):
    session = botocore.session.get_session()
    signer = RequestSigner(
        ServiceId("elasticache"), region, "elasticache", "v4", creds,
        session.get_component("event_emitter"),
    )
    query = {"Action": "connect", "User": user}
    if serverless:
        query["ResourceType"] = "ServerlessCache"
    url = urlunparse(ParseResult(scheme="https", netloc=cluster, path="/",
                                 query=urlencode(query), params="", fragment=""))
    frozen = datetime.datetime.fromtimestamp(at, datetime.timezone.utc).replace(tzinfo=None)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=frozen,
                           create=True), mock.patch("botocore.auth.datetime") as clock:
        clock.datetime.utcnow.return_value = frozen
        clock.datetime.now.return_value = frozen
        clock.timezone = datetime.timezone
        signed = signer.generate_presigned_url(
            {"method": "GET", "url": url, "body": {}, "headers": {}, "context": {}},
            operation_name="connect", expires_in=900, region_name=region,
        )
    return signed.removeprefix("https://")


if __name__ == "__main__":
    cluster, user, region, serverless, at, key, secret = sys.argv[1:8]
    session_token = sys.argv[8] if len(sys.argv) > 8 else None
    creds = Credentials(key, secret, session_token)
    print(token(cluster, user, region, serverless == "1", creds, int(at)))
