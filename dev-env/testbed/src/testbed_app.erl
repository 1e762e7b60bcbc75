%%% @doc The ex_esdb application of the testbed and its top supervisor.
%%%
%%% Children, in start order: Swarm's tracker, the pg scope 'Elixir.Phoenix.PubSub', the
%%% ex_esdb_events adapter (a pg member), one store server per store (replica, leader
%%% election, log), one worker supervisor per store, and the optional gossip sender.
-module(testbed_app).
-behaviour(application).
-behaviour(supervisor).

-export([start/2, stop/1, init/1, env/1, env/2]).
-export([start_workers_link/1]).

start(_Type, _Args) -> supervisor:start_link({local, testbed_sup}, ?MODULE, top).

stop(_) -> ok.

%% @doc An ex_esdb application variable.
env(Key) -> {ok, V} = application:get_env(ex_esdb, Key), V.
env(Key, Default) -> application:get_env(ex_esdb, Key, Default).

%% @doc The supervisor of one store's gateway workers.
start_workers_link(Store) ->
    supervisor:start_link(?MODULE, {workers, Store}).

init(top) ->
    Stores = env(stores),
    Base = [#{id => swarm, start => {'Elixir.Swarm', start_link, []}},
            #{id => pg, start => {pg, start_link, ['Elixir.Phoenix.PubSub']}},
            #{id => pubsub, start => {testbed_pubsub, start_link, []}}],
    StoreKids = lists:append(
                  [[#{id => {store, S}, start => {testbed_store, start_link, [S]}},
                    #{id => {workers, S}, start => {?MODULE, start_workers_link, [S]},
                      type => supervisor}] || S <- Stores]),
    Gossip = case env(gossip, undefined) of
                 undefined -> [];
                 Opts when is_map(Opts) ->
                     [#{id => gossip, start => {testbed_gossip, start_link, [Opts]}}]
             end,
    Misc = [#{id => {names, K}, start => {testbed_names, start_link, [K]}}
            || K <- [gater_api, store_registry]],
    {ok, {#{strategy => one_for_one, intensity => 50, period => 5},
          Base ++ Misc ++ StoreKids ++ Gossip}};
init({workers, Store}) ->
    N = env(workers_per_store, 2),
    %% Bad requests crash workers on purpose (as in ExESDB): allow many restarts.
    {ok, {#{strategy => one_for_one, intensity => 1000, period => 1},
          [#{id => I, start => {'Elixir.ExESDB.GatewayWorker', start_link, [Store]}}
           || I <- lists:seq(1, N)]}}.
