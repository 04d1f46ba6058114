#!/bin/sh
# Creates the engine's namespace and registers its search attributes (shared/CONTRACT.md "Search attributes"),
# leaving what already exists alone, so that it is safe to run on every `up`. The waiting loop follows
# temporalio/samples-server compose/scripts/create-namespace.sh.
set -eu
: "${TEMPORAL_ADDRESS:?}" "${TEMPORAL_NAMESPACE:?}"
RETENTION="${TEMPORAL_NAMESPACE_RETENTION:-30d}"

attempt=1
until temporal operator cluster health --address "$TEMPORAL_ADDRESS" >/dev/null 2>&1; do
    [ "$attempt" -lt 60 ] || { echo "temporal at $TEMPORAL_ADDRESS is not healthy" >&2; exit 1; }
    attempt=$((attempt + 1))
    sleep 2
done

if ! temporal operator namespace describe --address "$TEMPORAL_ADDRESS" -n "$TEMPORAL_NAMESPACE" >/dev/null 2>&1; then
    temporal operator namespace create --address "$TEMPORAL_ADDRESS" -n "$TEMPORAL_NAMESPACE" --retention "$RETENTION"
fi

known="$(temporal operator search-attribute list --address "$TEMPORAL_ADDRESS" -n "$TEMPORAL_NAMESPACE")"
for attribute in CustomerId:Keyword BillingStage:Keyword AmountDue:Double OldestDueDate:Datetime EscalationRef:Keyword; do
    name="${attribute%%:*}"
    if ! printf '%s\n' "$known" | grep -qw "$name"; then
        temporal operator search-attribute create --address "$TEMPORAL_ADDRESS" -n "$TEMPORAL_NAMESPACE" \
            --name "$name" --type "${attribute##*:}"
    fi
done
echo "namespace $TEMPORAL_NAMESPACE and its search attributes are in place"
