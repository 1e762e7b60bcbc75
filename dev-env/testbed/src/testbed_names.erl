%%% @doc Idle processes that hold the other names ExESDB puts in Swarm
%%% ({gater_api, Int}, {store_registry, Int}), so that clients must filter worker names.
-module(testbed_names).
-export([start_link/1, init/1]).

start_link(Kind) -> proc_lib:start_link(?MODULE, init, [{self(), Kind}]).

init({Parent, Kind}) ->
    N = case Kind of
            gater_api -> rand:uniform(130000000);
            store_registry -> rand:uniform(21000000)
        end,
    yes = 'Elixir.Swarm':register_name({Kind, N}, self()),
    proc_lib:init_ack(Parent, {ok, self()}),
    receive stop -> ok end.
