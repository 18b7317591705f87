# Rack::Session::Redis (redis-rack, redis-store, ruby-redis 4) in front of a
# small Rack app, pointed at 127.0.0.1:PORT: logs in, counts, logs out, and
# prints what each request saw as JSON. tests/other_stores.rs runs it through
# the proxy and directly on Redis and compares the two.
# Usage: ruby rack_session.rb PORT
require "json"
require "rack"
require "rack/mock"
require "redis-rack"

port = ARGV.fetch(0)
app = lambda do |env|
  session = env["rack.session"]
  case env["PATH_INFO"]
  when "/login"
    session["user"] = "alice"
    session["count"] = 0
  when "/incr"
    session["count"] = session["count"].to_i + 1
  when "/logout"
    env["rack.session.options"][:drop] = true
  end
  [200, { "content-type" => "application/json" },
   [JSON.generate("user" => session["user"], "count" => session["count"])]]
end
stack = Rack::Session::Redis.new(app, redis_server: "redis://127.0.0.1:#{port}/0/rack:session",
                                      expire_after: 600)
cookie = nil
seen = {}
%w[login incr incr show logout show].each_with_index do |step, i|
  env = Rack::MockRequest.env_for("/#{step}")
  env["HTTP_COOKIE"] = cookie if cookie
  status, headers, body = stack.call(env)
  raise "status #{status} at #{step}" unless status == 200
  set = headers["set-cookie"] || headers["Set-Cookie"]
  cookie = set.split(";").first if set
  text = +""
  body.each { |part| text << part }
  seen["#{i}:#{step}"] = JSON.parse(text)
end
puts JSON.generate(seen)
