%%% @doc The Phoenix.PubSub `ex_esdb_events' of the testbed, PG2-adapter style.
%%%
%%% One process per node, registered as 'Elixir.ex_esdb_events.Adapter' and joined to the
%%% pg group of that name in scope 'Elixir.Phoenix.PubSub'. broadcast/2 sends
%%% {forward_to_local, Topic, Msg, 'Elixir.Phoenix.PubSub'} to every member on another node
%%% and dispatches Msg to this node's local subscribers of Topic; a member that receives
%%% forward_to_local dispatches to its own local subscribers.
-module(testbed_pubsub).
-behaviour(gen_server).

-export([start_link/0, subscribe/1, unsubscribe/1, broadcast/2, local_broadcast/2]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-define(SCOPE, 'Elixir.Phoenix.PubSub').
-define(GROUP, 'Elixir.ex_esdb_events.Adapter').
-define(SUBS, testbed_pubsub_subscribers).

start_link() -> gen_server:start_link({local, ?GROUP}, ?MODULE, [], []).

%% @doc The calling process receives every message broadcast on Topic (on any node).
subscribe(Topic) -> gen_server:call(?GROUP, {subscribe, Topic, self()}).

unsubscribe(Topic) -> gen_server:call(?GROUP, {unsubscribe, Topic, self()}).

%% @doc Phoenix.PubSub.broadcast/3 over the PG2 adapter.
broadcast(Topic, Msg) ->
    Me = node(),
    [M ! {forward_to_local, Topic, Msg, ?SCOPE}
     || M <- pg:get_members(?SCOPE, ?GROUP), node(M) =/= Me],
    local_broadcast(Topic, Msg).

%% @doc Delivers to this node's subscribers of Topic only.
local_broadcast(Topic, Msg) ->
    [Pid ! Msg || {_, Pid} <- ets:lookup(?SUBS, Topic)],
    ok.

init([]) ->
    ets:new(?SUBS, [named_table, bag, protected, {read_concurrency, true}]),
    ok = pg:join(?SCOPE, ?GROUP, self()),
    {ok, #{}}.

handle_call({subscribe, Topic, Pid}, _From, Mons) ->
    ets:insert(?SUBS, {Topic, Pid}),
    Mons1 = case maps:is_key(Pid, Mons) of
                true -> Mons;
                false -> Mons#{Pid => erlang:monitor(process, Pid)}
            end,
    {reply, ok, Mons1};
handle_call({unsubscribe, Topic, Pid}, _From, Mons) ->
    ets:delete_object(?SUBS, {Topic, Pid}),
    {reply, ok, Mons}.

handle_cast(_, St) -> {noreply, St}.

handle_info({forward_to_local, Topic, Msg, _Dispatcher}, St) ->
    local_broadcast(Topic, Msg),
    {noreply, St};
handle_info({'DOWN', _, process, Pid, _}, Mons) ->
    ets:match_delete(?SUBS, {'_', Pid}),
    {noreply, maps:remove(Pid, Mons)};
handle_info(_, St) -> {noreply, St}.
