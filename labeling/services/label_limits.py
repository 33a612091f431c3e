"""The labeling hot path's limits, declared once (issue 8, item 9).

The services enforce them (labeling.services.labels, labeling.services.queues) and the queue
API's serializers are built from them (labeling.api.queue_serializers), so a request the API
accepts is one the service accepts. They used to disagree (a claim of at most 50 in the API and
200 in the service, a batch of 200 and 500); the API's values are the ones kept: the labeling
page claims at most 50 items and submits a grid page of 24.
"""

MAX_CLAIM = 50  # items one claim may lease
MAX_UNDO = 50  # labels one undo may take back
MAX_BATCH = 200  # labels one batch submit may carry
MAX_DURATION_MS = 24 * 3600 * 1000  # the time a label took, as the page measured it
MAX_KEY_LENGTH = 64  # a class or sub-category key as submitted
MAX_CLIENT_ID_LENGTH = 64  # the page's id for a submit, so a retry is recognised
