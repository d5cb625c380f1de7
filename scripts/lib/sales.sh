# shellcheck shell=bash
# Sales made through the admin API, for every script that needs one:
# scripts/up's demo sale, scripts/bench's, the chaos scenarios' and the load
# tests' README check. Needs curl only (scripts/up runs where jq may not be
# installed). Sourced after lib/services.sh.

# The first "id" of the JSON object on stdin (a created resource's own:
# the API writes it first).
json_id() { grep -o '"id": *"[^"]*"' | head -n 1 | cut -d '"' -f 4; }

# create_product BASE TOKEN STOCK SKU [NAME] [PRICE] [DESCRIPTION]: a
# product with STOCK units (by default "Bench item" at 1000 minor units,
# EUR); prints its id.
create_product() {
  local base=$1 token=$2 stock=$3 sku=$4 name=${5:-Bench item} price=${6:-1000} description=${7:-} id
  id=$(curl -fsS "$base/api/admin/products" -H "authorization: Bearer $token" \
    -H 'content-type: application/json' \
    -d "{\"sku\":\"$sku\",\"name\":\"$name\",${description:+\"description\":\"$description\",}\"price\":$price,\"currency\":\"EUR\",\"stock\":$stock}" \
    | json_id)
  [[ -n $id ]] || die "could not create the product $sku"
  echo "$id"
}

# sale_request PRODUCT_ID STOCK [PER_USER_LIMIT] [PRICE] [HOLD_SECONDS]: the
# body of POST /api/admin/flash-sales for a sale of STOCK units of
# PRODUCT_ID open from a second ago for an hour, PER_USER_LIMIT (1) per
# shopper, at PRICE (500), with a checkout hold of HOLD_SECONDS if given.
sale_request() {
  local starts ends
  starts=$(date -u -d '-1 second' +%Y-%m-%dT%H:%M:%SZ)
  ends=$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)
  printf '{"product_id":"%s","price":%s,"starts_at":"%s","ends_at":"%s","per_user_limit":%s,"stock":%s%s}' \
    "$1" "${4:-500}" "$starts" "$ends" "${3:-1}" "$2" "${5:+,\"hold_seconds\":$5}"
}

# create_sale BASE TOKEN STOCK RUN_ID [PER_USER_LIMIT] [PRODUCT_ID] [PRICE]
# [HOLD_SECONDS]: a sale (sale_request) of a new product BENCH-RUN_ID with
# exactly STOCK units, or of PRODUCT_ID; prints its id.
create_sale() {
  local base=$1 token=$2 stock=$3 run_id=$4 per_user_limit=${5:-1} product_id=${6:-} price=${7:-500} hold=${8:-} id
  # (exit: die in a command substitution only ends that subshell)
  [[ -n $product_id ]] || product_id=$(create_product "$base" "$token" "$stock" "BENCH-$run_id") || exit 1
  id=$(curl -fsS "$base/api/admin/flash-sales" -H "authorization: Bearer $token" \
    -H 'content-type: application/json' -d "$(sale_request "$product_id" "$stock" "$per_user_limit" "$price" "$hold")" \
    | json_id)
  [[ -n $id ]] || die "could not create a sale of product $product_id"
  echo "$id"
}

# seed_demo_sale BASE TOKEN: scripts/up's demo, a sneaker at 129.99 EUR
# sold at 49.99, 1000 units, one per shopper, for an hour; prints its id.
seed_demo_sale() {
  local product
  product=$(create_product "$1" "$2" 1000 "DEMO-$(date +%s)" "Demo sneaker" 12999 "Seeded by scripts/up") || exit 1
  create_sale "$1" "$2" 1000 demo 1 "$product" 4999
}
