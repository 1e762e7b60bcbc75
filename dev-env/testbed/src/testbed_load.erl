%%% @doc BEAM-native load generator: calls random gateway workers exactly as
%%% ExESDBGater.API does (GenServer.call to a worker picked uniformly at random from
%%% Swarm's registry, scanned per request).
%%%
%%% The Elixir gater runs Swarm itself, so its scan is local; here a refresher copies
%%% the cluster's registry ('Elixir.Swarm':registered() over rpc) into a local table
%%% every 500 ms, and every request scans and filters that full list.
%%%
%%%   main(#{nodes, store, concurrency, seconds, op => append | read | mixed})
%%%     prints one JSON line: op, concurrency, seconds, calls, errors, calls_per_s,
%%%     p50_us, p99_us, max_us.
-module(testbed_load).
-export([main/1, run/1]).

-define(REG, testbed_load_registry).

main(Opts) ->
    R = run(Opts),
    io:format("~s~n", [json(R)]).

run(#{nodes := Nodes, store := Store, concurrency := C, seconds := Secs, op := Op}) ->
    [pong = net_adm:ping(N) || N <- Nodes],
    ets:new(?REG, [named_table, public, {read_concurrency, true}]),
    refresh(Nodes),
    Refresher = spawn_link(fun() -> refresher(Nodes) end),
    Stream = <<"load-read">>,
    {ok, _} = call(Store, {append_events, Store, Stream, [event(I) || I <- lists:seq(1, 10)]}),
    Deadline = erlang:monotonic_time(microsecond) + Secs * 1000000,
    Self = self(),
    Pids = [spawn_link(fun() -> Self ! {done, self(), loop(I, Store, Op, Deadline, 0, [], 0)} end)
            || I <- lists:seq(1, C)],
    Results = [receive {done, P, R} -> R end || P <- Pids],
    unlink(Refresher),
    exit(Refresher, kill),
    Lat = lists:sort(lists:append([L || {L, _} <- Results])),
    Errors = lists:sum([E || {_, E} <- Results]),
    Calls = length(Lat),
    #{op => Op, concurrency => C, seconds => Secs, calls => Calls, errors => Errors,
      calls_per_s => Calls / max(1, Secs), p50_us => pct(Lat, 0.50), p99_us => pct(Lat, 0.99),
      max_us => case Lat of [] -> 0; _ -> lists:last(Lat) end}.

refresher(Nodes) ->
    receive after 500 -> ok end,
    refresh(Nodes),
    refresher(Nodes).

refresh(Nodes) ->
    N = lists:nth(rand:uniform(length(Nodes)), Nodes),
    case rpc:call(N, 'Elixir.Swarm', registered, [], 2000) of
        L when is_list(L) -> ets:insert(?REG, {all, L});
        _ -> ok
    end.

%% What ExESDBGater.API does per request: scan the registry, pick a random worker.
random_worker(Store) ->
    [{all, All}] = ets:lookup(?REG, all),
    case [P || {{gateway_worker, S, _, _}, P} <- All, S =:= Store] of
        [] -> undefined;
        Ws -> lists:nth(rand:uniform(length(Ws)), Ws)
    end.

call(Store, Req) ->
    case random_worker(Store) of
        undefined -> {error, no_workers};
        Pid -> gen_server:call(Pid, Req, 5000)
    end.

loop(I, Store, Op, Deadline, N, Lat, Err) ->
    T0 = erlang:monotonic_time(microsecond),
    case T0 >= Deadline of
        true -> {Lat, Err};
        false ->
            Req = request(I, Store, Op, N),
            Ok = try call(Store, Req) of
                     {ok, _} -> 0;
                     _ -> 1
                 catch exit:_ -> 1
                 end,
            T1 = erlang:monotonic_time(microsecond),
            loop(I, Store, Op, Deadline, N + 1, [T1 - T0 | Lat], Err + Ok)
    end.

request(I, Store, append, N) ->
    {append_events, Store, iolist_to_binary(["load-", integer_to_list(I)]), [event(N)]};
request(_I, Store, read, _N) ->
    {get_events, Store, <<"load-read">>, 0, 10, forward};
request(I, Store, mixed, N) when N rem 2 =:= 0 -> request(I, Store, append, N);
request(I, Store, mixed, N) -> request(I, Store, read, N).

event(N) ->
    #{'__struct__' => 'Elixir.ExESDB.Schema.NewEvent', '__unknown_fields__' => [],
      event_id => iolist_to_binary(io_lib:format("00000000-0000-7000-8000-~12..0B", [N rem 1000000000000])),
      event_type => <<"LoadTested:v1">>, data_content_type => 1, metadata_content_type => 1,
      data => #{<<"n">> => N}, metadata => nil}.

pct([], _) -> 0;
pct(L, P) -> lists:nth(max(1, min(length(L), round(P * length(L)))), L).

json(M) ->
    Fields = [io_lib:format("\"~s\":~s", [K, val(V)]) || {K, V} <- lists:sort(maps:to_list(M))],
    ["{", lists:join(",", Fields), "}"].

val(V) when is_atom(V) -> ["\"", atom_to_list(V), "\""];
val(V) when is_float(V) -> float_to_list(V, [{decimals, 1}]);
val(V) when is_integer(V) -> integer_to_list(V).
