-- A realistic Segment `track` call ("Product Viewed" from analytics.js): an anonymous visitor
-- drawn from a pool of pz_pool ids (so profiles are reused), a product from a catalogue of 2,000,
-- page context and one of a few user agents. The message id is given: unique per event.

local CATEGORIES = { "Shoes", "Jackets", "Bags", "Accessories", "Shirts", "Trousers", "Outdoor", "Kids" }
local REFERRERS = {
  "https://www.google.com/", "", "https://www.facebook.com/", "https://shop.example/", "https://www.bing.com/",
}
local USER_AGENTS = {
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
  "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36",
  "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
}

local fresh_counter = 0

function pz_anonymous_id()
  if pz_fresh then
    fresh_counter = fresh_counter + 1
    return string.format("new-%s-%d-%d", pz_prefix, pz_tid, fresh_counter)
  end
  return string.format("6f1d2c3b-0000-4000-8000-%012d", math.random(pz_pool))
end

function pz_event(message_id, anonymous_id, timestamp)
  local product = math.random(2000)
  local sku = string.format("sku-%04d", product)
  local category = CATEGORIES[product % #CATEGORIES + 1]
  local price = string.format("%d.%02d", 10 + product % 190, (product * 37) % 100)
  local url = "https://shop.example/p/" .. sku
  return string.format(
    '{"type":"track","event":"Product Viewed","anonymousId":"%s","messageId":"%s","timestamp":"%s",'
      .. '"properties":{"product_id":"%s","sku":"%s","category":"%s","name":"%s %d","brand":"Example",'
      .. '"variant":"blue","price":%s,"currency":"USD","quantity":1,"position":%d,"url":"%s"},'
      .. '"context":{"page":{"path":"/p/%s","referrer":"%s","search":"","title":"%s %d | Example Shop",'
      .. '"url":"%s"},"userAgent":"%s","locale":"en-US","library":{"name":"analytics.js","version":"5.2.0"}}}',
    anonymous_id, message_id, timestamp,
    sku, sku, category, category, product, price, math.random(24), url,
    sku, REFERRERS[math.random(#REFERRERS)], category, product, url, USER_AGENTS[math.random(#USER_AGENTS)]
  )
end
